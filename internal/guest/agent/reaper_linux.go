package agent

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reaper reaps the agent's children that nobody waits for: as PID 1 the
// agent inherits every orphan of a container that shares the guest's PID
// namespace, and each would stay a zombie. Children that someone waits for
// (a container's init, an exec, libcontainer's own helpers while it starts
// a process) are left to their waiter: a start holds the reaper off until
// the process it made is known, and a known process stays the waiter's
// until it has been waited for.
//
// A sweep asks the kernel for the agent's exited children (waitid with
// WNOWAIT, which leaves them waitable) rather than reading every process's
// /proc/PID/stat: each SIGCHLD (several per container start) used to scan
// the whole process table, which under TCG cost a container start ~15 ms
// of guest CPU and held starts off meanwhile.
type reaper struct {
	starts sync.RWMutex // starts hold it shared; a sweep holds it alone

	mu    sync.Mutex // guards known
	known map[int]bool

	kick chan struct{} // a waiter reaped a known process: sweep again
}

func newReaper() *reaper { return &reaper{known: map[int]bool{}, kick: make(chan struct{}, 1)} }

// starting holds sweeps off while a process is started; call the returned
// func with the new process's PID (0 if there is none) when its waiter
// knows it.
func (r *reaper) starting() func(pid int) {
	r.starts.RLock()
	return func(pid int) {
		if pid > 0 {
			r.mu.Lock()
			r.known[pid] = true
			r.mu.Unlock()
		}
		r.starts.RUnlock()
	}
}

// waited tells the reaper that pid's waiter has reaped it. A sweep that
// met pid as a zombie stopped there (the kernel names one exited child at
// a time), so the reaper sweeps again.
func (r *reaper) waited(pid int) {
	r.mu.Lock()
	delete(r.known, pid)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run sweeps on every SIGCHLD and after every waiter's reap, until ctx
// ends.
func (r *reaper) run(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	for {
		r.sweep()
		select {
		case <-ch:
		case <-r.kick:
		case <-ctx.Done():
			return
		}
	}
}

// sweep reaps the zombie children of this process that no waiter knows
// and returns how many it reaped. It stops at the first exited child a
// waiter knows: that waiter reaps it and calls waited, which sweeps on.
func (r *reaper) sweep() int {
	r.starts.Lock()
	defer r.starts.Unlock()
	n := 0
	for {
		pid, err := exitedChild()
		if err != nil || pid == 0 {
			return n
		}
		r.mu.Lock()
		mine := r.known[pid]
		r.mu.Unlock()
		if mine {
			return n
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil || got != pid {
			return n
		}
		n++
	}
}

// siginfo is the start of Linux's siginfo_t as waitid fills it for a child.
type siginfo struct {
	signo, errno, code, _ int32
	pid                   int32
	_                     [108]byte
}

// exitedChild names an exited, unreaped child of this process (0 if there
// is none) and leaves it waitable.
func exitedChild() (int, error) {
	var si siginfo
	for {
		_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_ALL, 0, uintptr(unsafe.Pointer(&si)),
			unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
		switch e {
		case 0:
			return int(si.pid), nil
		case unix.EINTR:
			continue
		default:
			return 0, e // ECHILD: no children at all
		}
	}
}
