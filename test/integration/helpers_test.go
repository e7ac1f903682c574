package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// binDir returns the directory holding lodge-runtime, or skips.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("LODGE_BIN")
	if dir == "" {
		if os.Getenv("LODGE_INTEGRATION") != "" {
			t.Fatal("LODGE_INTEGRATION is set but LODGE_BIN is not")
		}
		t.Skip("integration tests need LODGE_BIN (run `make test`)")
	}
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root")
	}
	return dir
}

// busyboxRootfs builds a root filesystem from Debian's busybox-static.
func busyboxRootfs(t *testing.T, dir string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found (apt-get install busybox-static): %v", err)
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(list)) {
		os.Symlink("busybox", filepath.Join(dir, "bin", applet))
	}
	os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc", "group"), []byte("root:x:0:\n"), 0o644)
}

// defaultSpec is close to `runc spec` with terminal off.
func defaultSpec(args ...string) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "lodge-test",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// fixture is a state root and a bundle for one test.
type fixture struct {
	t      *testing.T
	bin    string
	root   string // --root
	bundle string
	env    []string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, bin: binDir(t), root: t.TempDir(), bundle: t.TempDir()}
	busyboxRootfs(t, filepath.Join(f.bundle, "rootfs"))
	t.Cleanup(f.assertNoLeftovers)
	return f
}

func (f *fixture) writeSpec(s *specs.Spec) {
	f.t.Helper()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.bundle, "config.json"), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// config points lodge-runtime at a config file with these contents.
func (f *fixture) config(toml string) {
	p := filepath.Join(f.t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(toml), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.env = append(f.env, "LODGE_CONFIG="+p)
}

type result struct {
	stdout, stderr string
	code           int
}

// command builds `lodge-runtime --root R args...`.
func (f *fixture) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(f.bin, "lodge-runtime"), append([]string{"--root", f.root}, args...)...)
	cmd.Env = append(os.Environ(), f.env...)
	return cmd
}

// run runs `lodge-runtime run` on the fixture's bundle.
func (f *fixture) run(id, stdin string, extra ...string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := f.command(ctx, append(extra, "run", "--bundle", f.bundle, id)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("lodge-runtime: %v", err)
	}
	return r
}

// assertNoLeftovers fails if anything of this fixture's survives: a process
// mentioning the state root (qemu, virtiofsd), a mount below it, or a file
// in it.
func (f *fixture) assertNoLeftovers() {
	f.t.Helper()
	if procs := processesMentioning(f.root); len(procs) > 0 {
		f.t.Errorf("processes left behind: %v", procs)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, f.root) {
			f.t.Errorf("mount left behind: %s", l)
		}
	}
	entries, _ := os.ReadDir(f.root)
	for _, e := range entries {
		f.t.Errorf("state left behind: %s", filepath.Join(f.root, e.Name()))
	}
}

func processesMentioning(s string) []string {
	var out []string
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, fmt.Sprintf("%s: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}
