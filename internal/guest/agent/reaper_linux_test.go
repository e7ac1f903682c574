package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReaperReapsOrphansNotOthersExits: with the test process as the
// orphans' reaper (a subreaper, as PID 1 is in the guest), a child's
// background process is reaped once it exits, while the exit statuses of
// children that have waiters stay theirs.
func TestReaperReapsOrphansNotOthersExits(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := newReaper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)

	start := func(script string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		done := r.starting()
		if err := cmd.Start(); err != nil {
			done(0)
			t.Fatal(err)
		}
		done(cmd.Process.Pid)
		return cmd
	}
	// Its own exit status stays its waiter's, however the sweeps fall.
	for i := 0; i < 20; i++ {
		cmd := start("sleep 0.2 & exit 7")
		time.Sleep(10 * time.Millisecond)
		r.sweep()
		err := cmd.Wait()
		r.waited(cmd.Process.Pid)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			t.Fatalf("round %d: the waiter got %v, want exit status 7", i, err)
		}
	}
	// The twenty background sleeps were orphaned to this process; none
	// stays a zombie.
	deadline := time.Now().Add(10 * time.Second)
	for {
		z := zombieChildren(os.Getpid())
		if len(z) == 0 && time.Now().After(deadline.Add(-9*time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("zombies left: %v", z)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReaperSweepsOnAfterAWaitersReap: the kernel names one exited child at
// a time, so a sweep that meets a known child's zombie stops there; once
// that child's waiter reaps it, the zombie behind it (a child no waiter
// knows) is reaped without another SIGCHLD.
func TestReaperSweepsOnAfterAWaitersReap(t *testing.T) {
	r := newReaper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)
	// Both children forked by one thread: the kernel lists a thread's
	// children oldest first, so the known one is met first.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	done := r.starting()
	known := exec.Command("sh", "-c", "exit 3")
	if err := known.Start(); err != nil {
		done(0)
		t.Fatal(err)
	}
	done(known.Process.Pid)
	waitZombie(t, known.Process.Pid)
	// Started outside starting(): nobody waits for it.
	stray := exec.Command("true")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	waitZombie(t, stray.Process.Pid) // its SIGCHLD's sweep stopped at the known zombie
	time.Sleep(100 * time.Millisecond)
	if !slices.Contains(zombieChildren(os.Getpid()), stray.Process.Pid) {
		t.Fatal("the sweep went past a known child's zombie (the test's premise)")
	}
	var ee *exec.ExitError
	if err := known.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("the waiter got %v, want exit status 3", err)
	}
	r.waited(known.Process.Pid)
	deadline := time.Now().Add(5 * time.Second)
	for slices.Contains(zombieChildren(os.Getpid()), stray.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatal("the child nobody waits for stayed a zombie after the known one was reaped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitZombie waits until pid, a child of this process, has exited.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(zombieChildren(os.Getpid()), pid) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d did not exit", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// zombieChildren lists the children of parent that have exited and are not
// reaped yet, from /proc.
func zombieChildren(parent int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 2 || string(f[0]) != "Z" || string(f[1]) != strconv.Itoa(parent) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			out = append(out, pid)
		}
	}
	return out
}
