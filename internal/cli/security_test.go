package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/image"
)

// allowed reports whether profile lets name through unconditionally.
func allowed(p *specs.LinuxSeccomp, name string) bool {
	for _, s := range p.Syscalls {
		if s.Action == specs.ActAllow && len(s.Args) == 0 && slices.Contains(s.Names, name) {
			return true
		}
	}
	return false
}

func TestSecurityOpts(t *testing.T) {
	im := &image.Image{Ref: image.Ref{Name: "index.docker.io/library/app:1"}}
	im.Config.Config = v1.Config{Cmd: []string{"sh"}}
	id := strings.Repeat("cd", 32)
	spec := func(opts ...string) (*specs.Spec, error) {
		s, _, err := runSpec(im, nil, runOpts{securityOpts: opts}, nil, id)
		return s, err
	}

	// As `docker run`: docker's default profile, which refuses what is not
	// listed (with EPERM) and keeps what a container's capabilities do
	// not cover (mount, kexec_load, unshare) out.
	s, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	p := s.Linux.Seccomp
	if p == nil || p.DefaultAction != specs.ActErrno || len(p.Architectures) == 0 {
		t.Fatalf("default profile %+v: want docker's (errno by default, architectures named)", p)
	}
	for _, name := range []string{"read", "execve", "fork", "openat"} {
		if !allowed(p, name) {
			t.Errorf("the default profile refuses %s", name)
		}
	}
	for _, name := range []string{"mount", "kexec_load", "unshare", "bpf"} {
		if allowed(p, name) {
			t.Errorf("the default profile allows %s to a container without CAP_SYS_ADMIN", name)
		}
	}
	if s.Process.NoNewPrivileges {
		t.Error("no_new_privs set without no-new-privileges")
	}

	if s, err = spec("seccomp=unconfined", "no-new-privileges"); err != nil || s.Linux.Seccomp != nil || !s.Process.NoNewPrivileges {
		t.Errorf("seccomp=unconfined, no-new-privileges: %v, %+v", err, s)
	}
	if s, err = spec("seccomp:unconfined", "no-new-privileges=false"); err != nil || s.Linux.Seccomp != nil || s.Process.NoNewPrivileges {
		t.Errorf("seccomp:unconfined, no-new-privileges=false: %v", err)
	}

	// A profile file, in docker's format.
	f := filepath.Join(t.TempDir(), "p.json")
	os.WriteFile(f, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644)
	if s, err = spec("seccomp=" + f); err != nil {
		t.Fatal(err)
	}
	if p := s.Linux.Seccomp; p.DefaultAction != specs.ActAllow || len(p.Syscalls) != 1 || p.Syscalls[0].Names[0] != "chmod" {
		t.Errorf("profile from %s: %+v", f, p)
	}

	for opt, want := range map[string]string{
		"seccomp=" + f + ".missing": "no such file",
		"apparmor=unconfined":       "not supported",
		"no-new-privileges=maybe":   "true or false",
		"seccomp=":                  "seccomp=unconfined or seccomp=PROFILE.json",
	} {
		if _, err := spec(opt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--security-opt %s: %v, want an error saying %q", opt, err, want)
		}
	}
	os.WriteFile(f, []byte(`{"defaultAction":`), 0o644)
	if _, err := spec("seccomp=" + f); err == nil || !strings.Contains(err.Error(), "not a seccomp profile") {
		t.Errorf("a broken profile: %v", err)
	}
}
