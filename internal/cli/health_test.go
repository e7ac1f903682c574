package cli

import (
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestHealthOpts(t *testing.T) {
	image := func() *v1.Config {
		return &v1.Config{Healthcheck: &v1.HealthConfig{Test: []string{"CMD", "check"}, Interval: time.Minute, Retries: 5}}
	}
	c := image()
	if err := (healthOpts{interval: 2 * time.Second}).apply(c); err != nil {
		t.Fatal(err)
	}
	if h := c.Healthcheck; !slices.Equal(h.Test, []string{"CMD", "check"}) || h.Interval != 2*time.Second || h.Retries != 5 {
		t.Errorf("--health-interval over the image's check: %+v", h)
	}
	c = image()
	(healthOpts{cmd: "curl -f localhost"}).apply(c)
	if !slices.Equal(c.Healthcheck.Test, []string{"CMD-SHELL", "curl -f localhost"}) {
		t.Errorf("--health-cmd: %q", c.Healthcheck.Test)
	}
	c = &v1.Config{}
	(healthOpts{cmd: `["wget", "-q", "x"]`}).apply(c)
	if !slices.Equal(c.Healthcheck.Test, []string{"CMD", "wget", "-q", "x"}) {
		t.Errorf("--health-cmd as a JSON array: %q", c.Healthcheck.Test)
	}
	c = image()
	(healthOpts{none: true}).apply(c)
	if (&ctrRecord{Config: c}).healthcheck() != nil {
		t.Error("--no-healthcheck left the image's check")
	}
	if err := (healthOpts{retries: 2}).apply(&v1.Config{}); err == nil {
		t.Error("--health-retries without a check is taken")
	}
	if err := (healthOpts{cmd: "x", timeout: -time.Second}).apply(&v1.Config{}); err == nil {
		t.Error("a negative duration is taken")
	}
	if c := image(); (healthOpts{}).apply(c) != nil || c.Healthcheck.Interval != time.Minute {
		t.Error("no flags changed the image's check")
	}
}

func TestHealthArgv(t *testing.T) {
	if a, _ := healthArgv([]string{"CMD-SHELL", "exit 1"}); !slices.Equal(a, []string{"/bin/sh", "-c", "exit 1"}) {
		t.Errorf("CMD-SHELL: %q", a)
	}
	if a, _ := healthArgv([]string{"CMD", "true"}); !slices.Equal(a, []string{"true"}) {
		t.Errorf("CMD: %q", a)
	}
	if _, err := healthArgv([]string{"CMD"}); err == nil {
		t.Error("CMD without a command is taken")
	}
}
