// Package procid names a host process by PID and start time, so that a
// record written by one process can be acted on by another without
// signalling a recycled PID.
package procid

import (
	"context"
	"fmt"
	"os"
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
