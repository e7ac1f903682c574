package runtimecli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/state"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// Container statuses, as the OCI state reports them.
const (
	statusCreating = "creating"
	statusCreated  = "created"
	statusRunning  = "running"
	statusPaused   = "paused"
	statusStopped  = "stopped"
)

// Files in a container's directory (<root>/<id>/).
const (
	recordFile = "state.json"
	taskSock   = "task.sock" // the supervisor's task API
	fdSock     = "fd.sock"   // stdio descriptors passed to the supervisor
	vmDir      = "vm"        // the sandbox's state directory
	superLog   = "supervisor.log"
)

// record is a container's state on disk, written by the supervisor.
type record struct {
	ID          string            `json:"id"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Pid         int               `json:"pid"`       // the supervisor: the host process standing for the container
	PidStart    uint64            `json:"pid_start"` // its start time, to detect PID reuse
	Status      string            `json:"status"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Start says how the sandbox started (clone or cold boot, and why);
	// `state` shows it as io.lodge.start* annotations.
	Start      *sandbox.StartInfo `json:"start,omitempty"`
	ExitStatus *int               `json:"exit_status,omitempty"`
	// CgroupPath is the host cgroup the VM runs in (spec linux.cgroupsPath).
	CgroupPath string `json:"cgroup_path,omitempty"`
	// VMProcs are the VM's host processes (QEMU): delete ends them if the supervisor
	// died without taking them along.
	VMProcs []procid.ID `json:"vm_procs,omitempty"`
}

// errNoContainer reports an unknown container id.
var errNoContainer = errors.New("container does not exist")

func containerDir(root, id string) string { return filepath.Join(root, id) }

func checkID(id string) error {
	if !transport.ValidID(id) {
		return usageError{fmt.Sprintf("invalid container id %q (letters, digits and _.+- only)", id)}
	}
	return nil
}

// loadRecord reads a container's record and works out its live status.
func loadRecord(root, id string) (*record, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	var r record
	err := state.Read(filepath.Join(containerDir(root, id), recordFile), &r)
	if errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Stat(containerDir(root, id)); derr == nil {
			// Being created, or a supervisor that died before writing.
			return &record{ID: id, Status: statusCreating}, nil
		}
		return nil, fmt.Errorf("container %q: %w", id, errNoContainer)
	}
	if err != nil {
		return nil, err
	}
	if r.Status != statusStopped && !alive(r.Pid, r.PidStart) {
		r.Status = statusStopped
	}
	if r.Status == statusCreating && r.Pid == 0 {
		r.Status = statusStopped
	}
	return &r, nil
}

func (r *record) save(root string) error {
	return state.Write(filepath.Join(containerDir(root, r.ID), recordFile), r)
}

// alive reports whether pid is still the process that started at start.
func alive(pid int, start uint64) bool { return procid.ID{Pid: pid, Start: start}.Alive() }

// listRecords returns every container under root.
func listRecords(root string) ([]*record, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range entries {
		if !e.IsDir() || !transport.ValidID(e.Name()) {
			continue
		}
		if r, err := loadRecord(root, e.Name()); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// Info is what another command of this process (`lodge ps`) learns of a
// container from its record.
type Info struct {
	Status     string // creating, created, running, paused, stopped
	ExitStatus *int   // once known
	Pid        int    // the supervisor
	Created    time.Time
}

// Inspect reads a container's record under root; errors.Is(err,
// ErrNoContainer) when there is none.
func Inspect(root, id string) (Info, error) {
	r, err := loadRecord(root, id)
	if err != nil {
		return Info{}, err
	}
	return Info{Status: r.Status, ExitStatus: r.ExitStatus, Pid: r.Pid, Created: r.Created}, nil
}

// ErrNoContainer reports an unknown container id.
var ErrNoContainer = errNoContainer
