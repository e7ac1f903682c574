package agent

import (
	"context"
	"errors"
	"os"
	"os/exec"
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
