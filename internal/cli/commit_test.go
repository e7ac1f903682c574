package cli

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/image"
)

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
