package cli

import (
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/image"
)

// --change takes the instructions docker's commit takes, as a Dockerfile
// says them (exec and shell forms, $VAR from the config's environment,
// relative WORKDIR), and refuses the others.
func TestApplyChange(t *testing.T) {
	cfg := v1.Config{Env: []string{"PATH=/bin", "HOME=/root"}, WorkingDir: "/srv", Cmd: []string{"old"}}
	for _, c := range []string{
		`CMD echo "$HOME"`,
		`ENV PATH=$PATH:/opt/bin NEW="two words"`,
		`WORKDIR app`,
		`EXPOSE 8080 53/udp`,
		`LABEL a=b "c d"=e`,
		`USER 1000:1000`,
		`VOLUME ["/data"]`,
		`STOPSIGNAL SIGINT`,
	} {
		if err := applyChange(&cfg, c); err != nil {
			t.Fatalf("%s: %v", c, err)
		}
	}
	want := v1.Config{
		Env:          []string{"PATH=/bin:/opt/bin", "HOME=/root", "NEW=two words"},
		WorkingDir:   "/srv/app",
		Cmd:          []string{"/bin/sh", "-c", `echo "$HOME"`},
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
		Labels:       map[string]string{"a": "b", "c d": "e"},
		User:         "1000:1000",
		Volumes:      map[string]struct{}{"/data": {}},
		StopSignal:   "SIGINT",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config\n%+v\nwant\n%+v", cfg, want)
	}
	if err := applyChange(&cfg, `ENTRYPOINT ["/app", "--serve"]`); err != nil || !reflect.DeepEqual(cfg.Entrypoint, []string{"/app", "--serve"}) || cfg.Cmd != nil {
		t.Fatalf("ENTRYPOINT: %v, %q %q (a new entrypoint drops the old CMD, as docker's does)", err, cfg.Entrypoint, cfg.Cmd)
	}
	for _, bad := range []string{"RUN touch /x", "FROM busybox", "COPY a /b", "", "CMD a\nCMD b", "EXPOSE eighty"} {
		if err := applyChange(&cfg, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The config a commit starts from is the container's: the image's with
// the run's command, environment (without what the runtime adds),
// working directory, user, labels and ports.
func TestCtrConfig(t *testing.T) {
	im := &image.Image{}
	im.Config.Config = v1.Config{Env: []string{"PATH=/bin", "A=image"}, Cmd: []string{"sh"}, Labels: map[string]string{"from": "image"}}
	spec := &specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin", "A=flag", "HOSTNAME=abc", "TERM=xterm"}, Cwd: "/work"}}
	c := ctrConfig(im, runOpts{tty: true, user: "nobody", expose: []string{"80"}}, []string{"echo", "hi"}, spec, map[string]string{"l": "v"})
	if strings.Join(c.Cmd, " ") != "echo hi" || strings.Join(c.Env, ",") != "PATH=/bin,A=flag" || c.WorkingDir != "/work" ||
		c.User != "nobody" || c.Labels["from"] != "image" || c.Labels["l"] != "v" {
		t.Fatalf("config %+v", c)
	}
	if _, ok := c.ExposedPorts["80/tcp"]; !ok {
		t.Fatalf("ports %v", c.ExposedPorts)
	}
	if im.Config.Config.Labels["l"] != "" {
		t.Fatal("the image's own config was changed")
	}
}
