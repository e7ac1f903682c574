package agent

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A seccomp profile is compiled once: the first direct container of it
// has the program libcontainer compiled (captured from its load), a
// later one gets the same program without a compile, and both are
// confined by it (an errno'd call fails, an allowed one works).
func TestDirectSeccompCompiledOnce(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if !withSeccomp {
		t.Skip("built without libseccomp (make unit runs this again with the agent's tags)")
	}
	ret := uint(38) // ENOSYS
	profile := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"sethostname"}, Action: specs.ActErrno},
			{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &ret},
		}}
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
