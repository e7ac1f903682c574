package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/testbundle"
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

func defaultSpec(args ...string) *specs.Spec { return testbundle.Spec(args...) }

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
	if err := testbundle.Rootfs(filepath.Join(f.bundle, "rootfs")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.assertNoLeftovers)
	return f
}

func (f *fixture) writeSpec(s *specs.Spec) {
	f.t.Helper()
	if err := testbundle.WriteSpec(f.bundle, s); err != nil {
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
// mentioning the state root (QEMU), a mount below it, or a file
// in it.
func (f *fixture) assertNoLeftovers() {
	f.t.Helper()
	if procs := processesMentioning(f.root); len(procs) > 0 {
		f.t.Errorf("processes left behind: %v", procs)
		// They are this test's (they name its state root): end them, or
		// a failed test leaves VMs running under every later one.
		for _, p := range procs {
			if pid, err := strconv.Atoi(p[:strings.IndexByte(p, ':')]); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
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
