// Package procid names a host process by PID and start time, so that a
// record written by one process can be acted on by another without
// signalling a recycled PID.
package procid

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ID is a process: its PID and its start time in clock ticks since boot.
type ID struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// Of names a running process (Start is zero if it is already gone).
func Of(pid int) ID {
	st, _ := StartTime(pid)
	return ID{Pid: pid, Start: st}
}

// Alive reports whether the PID still belongs to the process it named.
func (p ID) Alive() bool {
	if p.Pid <= 0 {
		return false
	}
	st, err := StartTime(p.Pid)
	return err == nil && st == p.Start
}

// KillAll sends SIGKILL to every process of ps that is still alive and
// waits (up to ctx) until they are gone.
func KillAll(ctx context.Context, ps []ID) {
	for _, p := range ps {
		if p.Alive() {
			syscall.Kill(p.Pid, syscall.SIGKILL)
		}
	}
	for _, p := range ps {
		for p.Alive() && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// StartTime reads a process's start time (field 22 of /proc/PID/stat). A
// zombie counts as gone.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command (field 2) may contain spaces; fields restart after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d is a zombie", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Strays are the running processes whose program (the base name of their
// argv[0]) starts with one of names and one of whose arguments names dir
// or a path below it: the VMM processes of a sandbox or template whose
// owner died before it recorded them. A process that merely mentions dir
// (a shell, an editor) is not one.
func Strays(dir string, names ...string) []ID {
	dir = strings.TrimSuffix(dir, "/")
	var out []ID
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		prog := filepath.Base(args[0])
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(prog, n) }) {
			continue
		}
		if slices.ContainsFunc(args[1:], func(a string) bool { return mentions(a, dir) }) {
			out = append(out, Of(pid))
		}
	}
	return out
}

// mentions reports whether arg names dir or a path below it, alone or as
// the value of an option (path=..., file:...).
func mentions(arg, dir string) bool {
	for i := strings.Index(arg, dir); i >= 0; {
		end := i + len(dir)
		if end == len(arg) || arg[end] == '/' || arg[end] == ',' {
			return true
		}
		next := strings.Index(arg[end:], dir)
		if next < 0 {
			return false
		}
		i = end + next
	}
	return false
}
