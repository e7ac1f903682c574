package integration

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func hostKernel(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// TestRunIsAContainerInAVM checks, in one boot, what the process sees:
// the guest's kernel, its env, cwd, user and groups, hostname, a read-only
// root and masked paths; stdout and stderr arrive apart.
func TestRunIsAContainerInAVM(t *testing.T) {
	f := newFixture(t)
	s := defaultSpec("sh", "-c", `
		echo "kernel=$(uname -r)"
		echo "env=$GREETING"
		echo "cwd=$(pwd)"
		echo "id=$(id -u):$(id -g):$(id -G)"
		echo "host=$(hostname)"
		touch /rootfs-write 2>/dev/null && echo "rootfs=writable" || echo "rootfs=readonly"
		echo "kcore=$(wc -c < /proc/kcore)"
		echo "to-stderr" >&2`)
	s.Process.Env = append(s.Process.Env, "GREETING=hello from lodge")
	s.Process.Cwd = "/tmp"
	s.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{2000, 2001}}
	f.writeSpec(s)

	r := f.run("ctr-env", "")
	if r.code != 0 {
		t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			got[k] = v
		}
	}
	if got["kernel"] == "" || got["kernel"] == hostKernel(t) {
		t.Errorf("container kernel %q, host kernel %q: want the guest's own kernel", got["kernel"], hostKernel(t))
	}
	want := map[string]string{
		"env":    "hello from lodge",
		"cwd":    "/tmp",
		"id":     "1000:1001:1001 2000 2001",
		"host":   "lodge-test",
		"rootfs": "readonly",
		"kcore":  "0",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (stdout:\n%s)", k, got[k], v, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "to-stderr") || !strings.Contains(r.stderr, "to-stderr") {
		t.Errorf("stderr not kept apart: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		hostNS bool // share the guest's PID namespace: a namespace's init ignores SIGKILL from inside
	}{
		{"exit 7", []string{"sh", "-c", "exit 7"}, 7, false},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9, true},
		// One the Go runtime takes for its own crash: the supervisor must
		// still end by it, not with Go's dump and exit status 2.
		{"killed by SIGSEGV", []string{"sh", "-c", "kill -SEGV $$"}, 128 + 11, true},
		{"missing program", []string{"/no/such/program"}, -1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			s := defaultSpec(c.args...)
			if c.hostNS {
				s.Linux.Namespaces = s.Linux.Namespaces[1:] // drop the PID namespace
			}
			f.writeSpec(s)
			r := f.run("ctr-exit", "")
			switch {
			case c.code >= 0 && r.code != c.code:
				t.Fatalf("exit code %d, want %d; stderr:\n%s", r.code, c.code, r.stderr)
			case strings.Contains(r.stderr, "goroutine "):
				t.Fatalf("a Go runtime dump on stderr:\n%s", r.stderr)
			case c.code < 0 && (r.code == 0 || !strings.Contains(r.stderr, "/no/such/program")):
				t.Fatalf("exit code %d, stderr %q: want a failure naming the program", r.code, r.stderr)
			}
		})
	}
}

func TestRunStdin(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("sh", "-c", "tr a-z A-Z; echo done"))
	input := strings.Repeat("stream me through the vm\n", 2000) // 50 KB: more than one window
	r := f.run("ctr-stdin", input)
	if r.code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", r.code, r.stderr)
	}
	if want := strings.ToUpper(input) + "done\n"; r.stdout != want {
		t.Fatalf("stdout has %d bytes, want %d (head %q)", len(r.stdout), len(want), r.stdout[:min(80, len(r.stdout))])
	}
}

// TestRunForwardsSignals sends SIGTERM to lodge-runtime once the container
// runs; the container's trap must see it.
func TestRunForwardsSignals(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("sh", "-c", `trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done`))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := f.command(ctx, "run", "--bundle", f.bundle, "ctr-sig")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("container did not get ready: %q; stderr:\n%s", sc.Text(), stderr.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	rest := ""
	for sc.Scan() {
		rest += sc.Text() + "\n"
	}
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 3 || rest != "got-term\n" {
		t.Fatalf("exit %d, output after SIGTERM %q, stderr:\n%s", code, rest, stderr.String())
	}
}

// TestRunBadInput: each mistake exits non-zero with one line that names it,
// and leaves nothing behind (checked by the fixture).
func TestRunBadInput(t *testing.T) {
	valid := defaultSpec("true")
	for _, c := range []struct {
		name   string
		prep   func(f *fixture)
		args   []string
		want   string
		status int
	}{
		{"no config.json", func(f *fixture) {}, nil, "no config.json", 1},
		{"invalid json", func(f *fixture) { os.WriteFile(f.bundle+"/config.json", []byte("{nope"), 0o644) }, nil, "not valid JSON", 1},
		{"no rootfs", func(f *fixture) { f.writeSpec(valid); os.RemoveAll(f.bundle + "/rootfs") }, nil, "root filesystem", 1},
		{"empty args", func(f *fixture) { f.writeSpec(defaultSpec()) }, nil, "process.args", 1},
		{"unknown flag", func(f *fixture) { f.writeSpec(valid) }, []string{"--frobnicate"}, "flag provided but not defined", 2},
		{"host namespace", func(f *fixture) {
			s := defaultSpec("true")
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"})
			s.Linux.Namespaces = s.Linux.Namespaces[1:]
			f.writeSpec(s)
		}, nil, "cannot share the host's namespaces", 1},
		{"missing kernel", func(f *fixture) {
			f.writeSpec(valid)
			f.config("[guest]\nkernel = \"/nonexistent/vmlinux\"\n")
		}, nil, "/nonexistent/vmlinux not found (run `make setup`", 1},
		{"missing initrd", func(f *fixture) {
			f.writeSpec(valid)
			f.config("[guest]\ninitrd = \"/nonexistent/initrd.img\"\n")
		}, nil, "/nonexistent/initrd.img not found", 1},
		{"missing qemu", func(f *fixture) {
			f.writeSpec(valid)
			f.config("[vmm]\nqemu = \"/nonexistent/qemu-system-x86_64\"\n")
		}, nil, "install Debian's qemu-system-x86", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.prep(f)
			r := f.run("ctr-bad", "", c.args...)
			if r.code != c.status {
				t.Errorf("exit code %d, want %d", r.code, c.status)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("stderr %q does not say %q", r.stderr, c.want)
			}
			if len(lines) != 1 && c.name != "missing kernel" && c.name != "missing initrd" {
				t.Errorf("stderr has %d lines, want one:\n%s", len(lines), r.stderr)
			}
		})
	}
}

// TestBootFailures: a guest that never answers times out, a guest that
// dies is reported, both with the console's last lines.
func TestBootFailures(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		f := newFixture(t)
		f.writeSpec(defaultSpec("true"))
		// A cold boot: a clone answers well within 300 ms of its own budget.
		f.config("[vmm]\nboot_timeout = \"300ms\"\n[template]\nenabled = false\n")
		r := f.run("ctr-timeout", "")
		if r.code == 0 || !strings.Contains(r.stderr, "did not answer within 300ms") || !strings.Contains(r.stderr, "console") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
	})
	t.Run("kernel panic", func(t *testing.T) {
		f := newFixture(t)
		f.writeSpec(defaultSpec("true"))
		junk := t.TempDir() + "/junk.img"
		os.WriteFile(junk, []byte(strings.Repeat("not a cpio archive\n", 64)), 0o644)
		f.config("[guest]\ninitrd = \"" + junk + "\"\n")
		r := f.run("ctr-panic", "")
		if r.code == 0 || !strings.Contains(r.stderr, "qemu exited while the guest booted") ||
			!strings.Contains(r.stderr, "Kernel panic") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
	})
}

// A container without a memory limit that eats all it can (a shell string
// doubling) is OOM-killed in the containers' cgroup, which the agent
// fences below the guest's memory, not by the kernel's global OOM killer
// after the whole guest ran out: the cgroup's memory.events count an
// "oom" at the fence, the rest of the container (its shell) carries on,
// and so does the agent, which reports the ending.
func TestMemoryHogFenced(t *testing.T) {
	f := newFixture(t)
	s := defaultSpec("sh", "-c", `
		echo "fence=$(cat /sys/fs/cgroup/lodge/memory.max)"
		echo "total=$(awk '/MemTotal/ {print $2 * 1024}' /proc/meminfo)"
		(x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done)
		echo "hog=$?"
		echo "oom=$(awk '$1 == "oom" {print $2}' /sys/fs/cgroup/lodge/memory.events)"
		echo survived`)
	// The guest's cgroup hierarchy (no cgroup namespace: testbundle's
	// spec has none) shows the fence; no memory limit of its own.
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
		Options: []string{"nosuid", "noexec", "nodev", "ro"}})
	if s.Linux.Resources != nil {
		s.Linux.Resources.Memory = nil
	}
	f.writeSpec(s)
	r := f.run("ctr-hog", "")
	got := map[string]string{}
	for _, l := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	fence, _ := strconv.ParseUint(got["fence"], 10, 64)
	total, _ := strconv.ParseUint(got["total"], 10, 64)
	if fence == 0 || total == 0 || fence >= total {
		t.Errorf("containers' memory.max %q, guest memory %q: want a fence below the guest's memory", got["fence"], got["total"])
	}
	if r.code != 0 || got["hog"] != "137" || got["oom"] == "" || got["oom"] == "0" || !strings.Contains(r.stdout, "survived") {
		t.Errorf("exit %d, hog ended %q, oom events at the fence %q; stdout:\n%s\nstderr:\n%s", r.code, got["hog"], got["oom"], r.stdout, r.stderr)
	}
	f.assertNoLeftovers()
}

// A guest kernel panic (sysrq from a privileged container) ends the run
// with a non-zero status and says so, with the console's lines, and leaves
// nothing behind.
func TestGuestKernelPanic(t *testing.T) {
	f := newFixture(t)
	s := defaultSpec("sh", "-c", "echo before; echo c > /proc/sysrq-trigger; sleep 60; echo after")
	s.Linux.ReadonlyPaths, s.Linux.MaskedPaths = nil, nil
	caps := append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
	s.Process.Capabilities.Bounding, s.Process.Capabilities.Effective, s.Process.Capabilities.Permitted = caps, caps, caps
	f.writeSpec(s)
	r := f.run("ctr-panic", "")
	if r.code == 0 || strings.Contains(r.stdout, "after") || !strings.Contains(r.stderr, "the guest kernel panicked") ||
		!strings.Contains(r.stderr, "sysrq triggered crash") {
		t.Errorf("exit %d; stdout %q; stderr:\n%s\nwant a failure that names the guest kernel's panic", r.code, r.stdout, r.stderr)
	}
	f.assertNoLeftovers()
}
