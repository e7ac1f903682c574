package shim

import (
	"fmt"
	"sync"

	apitypes "github.com/containerd/containerd/api/types/task"
)

// lifecycle is a container's state and the changes allowed to it:
//
//	created ──start──> running ──pause──> paused
//	   │                  ^ └────resume────┘ │
//	   │                  └──────────────────┘
//	   └── init exits (from any of the three) ──> stopped
//	created, stopped ──delete──> deleted
//
// A change runs in two steps: begin checks the state and marks the
// container busy, under the lock, so that of two concurrent Starts (or
// Pauses, or a Delete beside a Start) one proceeds and the other is refused
// cleanly; end records the outcome. The init's exit is recorded whatever is
// in progress: a process does not wait for permission to die.
type lifecycle struct {
	mu     sync.Mutex
	status apitypes.Status
	busy   string // the change in progress, "" if none
	gone   bool   // deleted
	// changed is told each new state a change leads to, in order (under
	// the lock); the init's exit is reported by the service with its
	// status instead.
	changed func(apitypes.Status)
}

// transitions: for each change, the states it may start from and the one
// it leads to.
var transitions = map[string]struct {
	from []apitypes.Status
	to   apitypes.Status
}{
	"start":  {[]apitypes.Status{apitypes.Status_CREATED}, apitypes.Status_RUNNING},
	"pause":  {[]apitypes.Status{apitypes.Status_RUNNING}, apitypes.Status_PAUSED},
	"resume": {[]apitypes.Status{apitypes.Status_PAUSED}, apitypes.Status_RUNNING},
	"delete": {[]apitypes.Status{apitypes.Status_CREATED, apitypes.Status_STOPPED}, apitypes.Status_STOPPED},
}

func newLifecycle(changed func(apitypes.Status)) *lifecycle {
	if changed == nil {
		changed = func(apitypes.Status) {}
	}
	return &lifecycle{status: apitypes.Status_CREATED, changed: changed}
}

// Status is the current state.
func (l *lifecycle) Status() apitypes.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// begin starts change op on container id, or says why it cannot.
func (l *lifecycle) begin(id, op string) error {
	tr, ok := transitions[op]
	if !ok {
		return fmt.Errorf("lifecycle: unknown change %q", op)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.gone:
		return fmt.Errorf("%w: container %q", ErrNotFound, id)
	case l.busy != "":
		return fmt.Errorf("%w: container %s: %s refused while a %s is in progress", ErrPrecondition, id, op, l.busy)
	}
	for _, f := range tr.from {
		if l.status == f {
			l.busy = op
			return nil
		}
	}
	return fmt.Errorf("%w: container %s is %s; %s needs it %s", ErrPrecondition, id, statusName(l.status), op, statusNames(tr.from))
}

// end finishes the change begun: on success the state moves on (a delete
// marks the container gone), unless the init exited meanwhile, which
// stands.
func (l *lifecycle) end(op string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy = ""
	if !ok {
		return
	}
	if op == "delete" {
		l.gone = true
		return
	}
	if l.status != apitypes.Status_STOPPED {
		l.status = transitions[op].to
		l.changed(l.status)
	}
}

// stopped records the init's exit.
func (l *lifecycle) stopped() {
	l.mu.Lock()
	l.status = apitypes.Status_STOPPED
	l.mu.Unlock()
}

func statusNames(ss []apitypes.Status) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " or "
		}
		out += statusName(s)
	}
	return out
}
