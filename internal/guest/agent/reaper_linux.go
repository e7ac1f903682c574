package agent

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper reaps the agent's children that nobody waits for: as PID 1 the
// agent inherits every orphan of a container that shares the guest's PID
// namespace, and each would stay a zombie. Children that someone waits for
// (a container's init, an exec, libcontainer's own helpers while it starts
// a process) are left to their waiter: a start holds the reaper off until
// the process it made is known, and a known process stays the waiter's
// until it has been waited for.
type reaper struct {
	starts sync.RWMutex // starts hold it shared; a sweep holds it alone

	mu    sync.Mutex // guards known
	known map[int]bool
}

func newReaper() *reaper { return &reaper{known: map[int]bool{}} }

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

// waited tells the reaper that pid's waiter has reaped it.
func (r *reaper) waited(pid int) {
	r.mu.Lock()
	delete(r.known, pid)
	r.mu.Unlock()
}

// run sweeps on every SIGCHLD until ctx ends.
func (r *reaper) run(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	for {
		r.sweep()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// sweep reaps every zombie child of this process that no waiter knows and
// returns how many it reaped.
func (r *reaper) sweep() int {
	r.starts.Lock()
	defer r.starts.Unlock()
	n := 0
	for _, pid := range zombieChildren(os.Getpid()) {
		r.mu.Lock()
		mine := r.known[pid]
		r.mu.Unlock()
		if mine {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			n++
		}
	}
	return n
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
