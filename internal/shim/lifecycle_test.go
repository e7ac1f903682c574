package shim

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	apitypes "github.com/containerd/containerd/api/types/task"
)

var (
	created = apitypes.Status_CREATED
	running = apitypes.Status_RUNNING
	paused  = apitypes.Status_PAUSED
	stopped = apitypes.Status_STOPPED
)

// lifecycleAt is a lifecycle in state st.
func lifecycleAt(st apitypes.Status) *lifecycle {
	l := newLifecycle(nil)
	l.status = st
	return l
}

func TestLifecycleTransitions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		from apitypes.Status
		op   string
		ok   bool
		to   apitypes.Status
	}{
		{created, "start", true, running},
		{running, "start", false, running},
		{paused, "start", false, paused},
		{stopped, "start", false, stopped},
		{running, "pause", true, paused},
		{created, "pause", false, created},
		{paused, "pause", false, paused},
		{stopped, "pause", false, stopped},
		{paused, "resume", true, running},
		{running, "resume", false, running},
		{created, "resume", false, created},
		{created, "delete", true, created},
		{stopped, "delete", true, stopped},
		{running, "delete", false, running},
		{paused, "delete", false, paused},
	} {
		l := lifecycleAt(tc.from)
		err := l.begin("c1", tc.op)
		if (err == nil) != tc.ok {
			t.Errorf("%s from %s: %v, want allowed=%v", tc.op, statusName(tc.from), err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrPrecondition) {
				t.Errorf("%s from %s: %v is not a failed precondition", tc.op, statusName(tc.from), err)
			}
		} else {
			l.end(tc.op, true)
		}
		if got := l.Status(); got != tc.to {
			t.Errorf("%s from %s: now %s, want %s", tc.op, statusName(tc.from), statusName(got), statusName(tc.to))
		}
	}
}

// A failed change leaves the state as it was; a deleted container is
// gone for every change; the init's exit stands over a change in progress.
func TestLifecycleOutcomes(t *testing.T) {
	t.Parallel()
	l := lifecycleAt(created)
	if err := l.begin("c1", "start"); err != nil {
		t.Fatal(err)
	}
	l.end("start", false)
	if l.Status() != created {
		t.Fatalf("a failed start left %s", statusName(l.Status()))
	}

	l = lifecycleAt(running)
	if err := l.begin("c1", "pause"); err != nil {
		t.Fatal(err)
	}
	l.stopped() // the init exits while the freeze runs
	l.end("pause", true)
	if l.Status() != stopped {
		t.Fatalf("the init's exit was overwritten: %s", statusName(l.Status()))
	}
	if err := l.begin("c1", "delete"); err != nil {
		t.Fatal(err)
	}
	l.end("delete", true)
	for _, op := range []string{"start", "pause", "resume", "delete"} {
		if err := l.begin("c1", op); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after delete: %v, want not found", op, err)
		}
	}
}

// Of concurrent changes on one container, exactly one proceeds; the
// others are refused cleanly while it runs.
func TestLifecycleConcurrentChanges(t *testing.T) {
	t.Parallel()
	for _, pair := range [][2]string{{"start", "start"}, {"pause", "pause"}, {"start", "delete"}, {"resume", "resume"}} {
		from := map[string]apitypes.Status{"start": created, "pause": running, "resume": paused}[pair[0]]
		l := lifecycleAt(from)
		var won, refused atomic.Int32
		var wg sync.WaitGroup
		release := make(chan struct{})
		for i := 0; i < 20; i++ {
			op := pair[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.begin("c1", op); err != nil {
					if !errors.Is(err, ErrPrecondition) {
						t.Errorf("%s refused with %v", op, err)
					}
					refused.Add(1)
					return
				}
				won.Add(1)
				<-release // the change is in progress while the others try
				l.end(op, true)
			}()
		}
		// Every other change is refused while the first is in progress.
		for won.Load()+refused.Load() < 20 {
			runtime.Gosched()
		}
		close(release)
		wg.Wait()
		if n := won.Load(); n != 1 {
			t.Errorf("%v: %d changes proceeded, want 1", pair, n)
		}
	}
}
