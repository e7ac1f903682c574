package confine

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// GoLocked runs fn in a new goroutine locked to an OS thread that is not
// the process's main thread, and never unlocks it: fn changes the thread's
// namespaces, so the thread must end with fn (the Go runtime then discards
// it). The main thread is never used, because the runtime keeps it when
// its goroutine ends and /proc/self shows the main thread's namespaces.
func GoLocked(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		// Hold the main thread until fn's goroutine has a thread of its own.
		held := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(held)
			fn()
		}()
		<-held
		runtime.UnlockOSThread()
	}()
}

// Start starts cmd on a thread of its own under the filter of Thread,
// after setup (if not nil) has run on that thread; the thread waits for cmd
// and ends with it, so that cmd's Pdeathsig (which fires when the thread
// that started it ends) fires only when its owner process dies. wait
// yields cmd.Wait's result.
func Start(cmd *exec.Cmd, setup func() error) (wait <-chan error, err error) {
	started := make(chan error, 1)
	waited := make(chan error, 1)
	GoLocked(func() {
		if setup != nil {
			if err := setup(); err != nil {
				started <- err
				return
			}
		}
		if err := Thread(); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	})
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}

// DropCaps removes every capability but keep from this thread's bounding
// set (and so from what a program it starts as root has after exec). Run
// it on a thread that ends with what it starts (Start's setup).
func DropCaps(keep []uintptr) error {
	for c := uintptr(0); c <= lastCap(); c++ {
		if slices.Contains(keep, c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// lastCap is the kernel's highest capability number.
func lastCap() uintptr {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return uintptr(n)
		}
	}
	return unix.CAP_LAST_CAP
}
