package build

import (
	"reflect"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// --change takes the instructions docker's commit takes, as a Dockerfile
// says them (exec and shell forms, $VAR from the config's environment,
// relative WORKDIR), and refuses the others.
func TestChange(t *testing.T) {
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
		if err := Change(&cfg, c); err != nil {
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
	if err := Change(&cfg, `ENTRYPOINT ["/app", "--serve"]`); err != nil || !reflect.DeepEqual(cfg.Entrypoint, []string{"/app", "--serve"}) || cfg.Cmd != nil {
		t.Fatalf("ENTRYPOINT: %v, %q %q (a new entrypoint drops the old CMD, as docker's does)", err, cfg.Entrypoint, cfg.Cmd)
	}
	for _, bad := range []string{"RUN touch /x", "FROM busybox", "COPY a /b", "", "CMD a\nCMD b", "EXPOSE eighty"} {
		if err := Change(&cfg, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
