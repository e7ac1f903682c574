package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/guest/directinit"
	"github.com/lodgeruntime/lodge/internal/seccompbpf"
)

// testProfile skips a test that cannot compile filters and returns a
// profile that fails sethostname with EPERM and mkdir with ENOSYS.
func testProfile(t *testing.T, flags ...specs.LinuxSeccompFlag) *specs.LinuxSeccomp {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if !withSeccomp {
		t.Skip("built without libseccomp (make unit runs this again with the agent's tags)")
	}
	ret := uint(38) // ENOSYS
	return &specs.LinuxSeccomp{DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Flags:         flags,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"sethostname"}, Action: specs.ActErrno},
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &ret},
		}}
}

// A seccomp profile is compiled once: the first direct container of it
// has the program libcontainer compiled (captured from its load), a
// later one gets the same program without a compile, and both are
// confined by it (an errno'd call fails, an allowed one works).
func TestDirectSeccompCompiledOnce(t *testing.T) {
	profile := testProfile(t)
	cfg, err := specconv.SetupSeccomp(profile)
	if err != nil {
		t.Fatal(err)
	}
	var p seccompPrograms
	first, _, err := p.program(cfg)
	if err != nil {
		t.Fatalf("the profile was not compiled: %v", err)
	}
	if len(first.Filter) < 8*10 || len(first.Filter)%8 != 0 {
		t.Fatalf("a program of %d bytes", len(first.Filter))
	}
	again, _, err := p.program(cfg)
	if err != nil || again != first {
		t.Fatalf("the profile was compiled again (%v)", err)
	}

	// Two containers of the profile, through the guest's programs.
	for i := range 2 {
		spec := directSpec(t, pauseRoot(t))
		spec.Linux.Seccomp = profile
		spec.Process.Args = []string{"/bin/busybox", "sh", "-c",
			"grep '^Seccomp:' /proc/self/status; hostname other 2>&1; echo sethostname=$?; " +
				"mkdir /data/d 2>&1; echo mkdir=$?; cat /etc/extra"}
		out := runSpec(t, spec, fmt.Sprintf("direct-seccomp-%d-%d", os.Getpid(), i), true, nil)
		for _, want := range []string{"Seccomp:\t2", "sethostname=1", "mkdir=1", "hello"} {
			if !strings.Contains(out, want) {
				t.Errorf("container %d: no %q in:\n%s", i, want, out)
			}
		}
		if !strings.Contains(out, "Function not implemented") || !strings.Contains(out, "Operation not permitted") {
			t.Errorf("container %d: the filter's errnos are not the profile's:\n%s", i, out)
		}
	}
	compiledSeccomp.mu.Lock()
	n := len(compiledSeccomp.m)
	compiledSeccomp.mu.Unlock()
	if n == 0 {
		t.Error("the containers' profile was not compiled by the agent")
	}
}

// A capture whose helper is interrupted by a signal while the agent reads
// its load (Go's preemption signal, SIGURG, does this in the guest) still
// gets the program: the interrupted call is made again, and answered.
func TestDirectSeccompCaptureInterrupted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if !withSeccomp {
		t.Skip("built without libseccomp (make unit runs this again with the agent's tags)")
	}
	cfg, err := specconv.SetupSeccomp(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"sethostname"}, Action: specs.ActErrno}}})
	if err != nil {
		t.Fatal(err)
	}
	reads := 0
	afterCaptureRead = func(helper int) {
		reads++
		if reads == 1 {
			unix.Kill(helper, unix.SIGURG)
			time.Sleep(100 * time.Millisecond) // the signal ends the wait; the call is made again
		}
	}
	defer func() { afterCaptureRead = nil }()
	var p seccompPrograms
	prog, _, err := p.program(cfg)
	if err != nil {
		t.Fatalf("an interrupted capture failed: %v", err)
	}
	if reads < 2 {
		t.Fatalf("the interrupted load was not read again (%d reads)", reads)
	}
	if len(prog.Filter) == 0 {
		t.Fatal("an empty program")
	}
}

// The host compiles a spec's profile with the agent's binary as an
// unprivileged user (seccompbpf.SpecArg) and gets the very program the
// guest's own compile of it gets; the agent keeps a host program only
// where it has none and its kernel knows the program's flags, and a
// container of the profile then compiles nothing.
func TestDirectSeccompCompiledOnTheHost(t *testing.T) {
	profile := testProfile(t, specs.LinuxSeccompFlagSpecAllow)
	b, err := json.Marshal(profile)
	if err != nil {
		t.Fatal(err)
	}
	// The helper as the host runs it: a binary nobody may execute, as nobody.
	dir, err := os.MkdirTemp("", "seccomp-helper-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	helper := filepath.Join(dir, "lodge-agent")
	copyExecutable(t, os.Args[0], helper)
	os.Chmod(dir, 0o755)
	hostProg, err := seccompbpf.Capture(context.Background(), seccompbpf.Helper{Path: helper,
		Args: []string{helper, seccompbpf.SpecArg}, Cred: &syscall.Credential{Uid: 65534, Gid: 65534}}, b)
	if err != nil {
		t.Fatalf("the host's compile failed: %v", err)
	}
	cfg, err := specconv.SetupSeccomp(profile)
	if err != nil {
		t.Fatal(err)
	}
	var guest seccompPrograms
	guestProg, _, err := guest.program(cfg)
	if err != nil {
		t.Fatalf("the guest's compile failed: %v", err)
	}
	if hostProg.Flags != guestProg.Flags || !bytes.Equal(hostProg.Filter, guestProg.Filter) {
		t.Fatalf("the host's program (flags %#x, %d bytes) is not the guest's (flags %#x, %d bytes)",
			hostProg.Flags, len(hostProg.Filter), guestProg.Flags, len(guestProg.Filter))
	}
	if hostProg.Flags&unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW == 0 {
		t.Errorf("the profile's flag is not the program's (flags %#x)", hostProg.Flags)
	}

	// What the agent keeps.
	var p seccompPrograms
	unknown := &directinit.SeccompProgram{Flags: hostProg.Flags | 1<<30, Filter: hostProg.Filter}
	malformed := &directinit.SeccompProgram{Flags: hostProg.Flags, Filter: hostProg.Filter[:len(hostProg.Filter)-3]}
	for _, bad := range []*directinit.SeccompProgram{unknown, malformed} {
		if got, _ := p.adopt(cfg, bad); got != nil {
			t.Fatal("the agent took a program its kernel would refuse")
		}
	}
	if got, fromHost := p.adopt(cfg, hostProg); got != hostProg || !fromHost {
		t.Fatal("the agent did not take the host's program")
	}
	if got, fromHost := p.adopt(cfg, guestProg); got != hostProg || fromHost {
		t.Error("a second program replaced the first")
	}
	got, took, err := p.program(cfg)
	if err != nil || got != hostProg || took != 0 {
		t.Fatalf("the profile was compiled again (took %v, err %v)", took, err)
	}
	spec := directSpec(t, pauseRoot(t))
	spec.Linux.Seccomp = profile
	spec.Process.Args = []string{"/bin/busybox", "sh", "-c", "hostname other 2>&1; echo sethostname=$?; mkdir /data/d 2>&1; echo mkdir=$?"}
	out := runSpec(t, spec, fmt.Sprintf("host-seccomp-%d", os.Getpid()), true, nil)
	for _, want := range []string{"sethostname=1", "mkdir=1", "Operation not permitted", "Function not implemented"} {
		if !strings.Contains(out, want) {
			t.Errorf("the host's program does not confine the container as the profile says: no %q in:\n%s", want, out)
		}
	}
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A pod's sandbox container that a holder would serve but for its seccomp
// filter is a direct container trimmed to a holder's plan: its root (the
// image's, with no /proc or /dev) is its only mount, the agent sets its
// OOM score, and its program runs under the filter, with the spec's user
// and no_new_privs. A spec a holder could not serve anyway is not one.
func TestDirectSandboxAsHolder(t *testing.T) {
	profile := testProfile(t)
	root := pauseRoot(t)
	spec := pauseSpec()
	spec.Linux.Sysctl = nil // a direct container sets none
	spec.Root = &specs.Root{Path: root, Readonly: true}
	spec.Linux.Seccomp = profile
	adj := 123 // (containerd gives -998, which this host may not lower to)
	spec.Process.OOMScoreAdj = &adj
	spec.Mounts = []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}}}
	spec.Linux.MaskedPaths = []string{"/proc/kcore"}
	if !holdsButForSeccomp(spec, root, nil) {
		t.Fatal("a sandbox container with a seccomp filter is not served as a holder's")
	}
	other := *spec
	other.Process = &specs.Process{}
	*other.Process = *spec.Process
	other.Process.Terminal = true
	if holdsButForSeccomp(&other, root, nil) {
		t.Error("a sandbox container with a terminal is served as a holder's")
	}

	id := fmt.Sprintf("lean-sandbox-%d", os.Getpid())
	cfg, lp := specConfig(t, spec, id)
	plan, why := planDirect(id, cfg, lp)
	if plan == nil {
		t.Fatalf("not a direct container: %s", why)
	}
	plan.asHolder()
	d, err := newDirect("", id, cfg, plan)
	if err != nil {
		t.Fatal(err)
	}
	proc, pid, err := d.startInit(lp)
	if err != nil {
		d.Destroy()
		t.Fatalf("the sandbox container did not start: %v", err)
	}
	defer func() {
		d.Destroy()
		proc.Wait()
	}()
	if err := d.Exec(); err != nil {
		t.Fatalf("start: %v", err)
	}
	var cmdline []byte
	for i := 0; i < 100; i++ { // until the first step has executed the program
		if cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(cmdline) == "sleep\x001000\x00" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if string(cmdline) != "sleep\x001000\x00" {
		t.Fatalf("cmdline %q, want the pause program", cmdline)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "Uid:\t65535\t65535\t65535\t65535", "CapBnd:\t0000000000000021"} {
		if !strings.Contains(string(status), want+"\n") {
			t.Errorf("the sandbox's status lacks %q:\n%s", want, status)
		}
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); string(b) != "123\n" {
		t.Errorf("oom_score_adj %q, want 123", b)
	}
	mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if lines := strings.Split(strings.TrimSpace(string(mi)), "\n"); len(lines) != 1 || len(strings.Fields(lines[0])) < 5 ||
		strings.Fields(lines[0])[4] != "/" {
		t.Errorf("the sandbox's mounts are more than its root:\n%s", mi)
	}
}
