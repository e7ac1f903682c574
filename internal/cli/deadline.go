package cli

import (
	"context"
	"time"
)

// A container's deadline: `lodge run --timeout D` stops each run D after it
// starts; `lodge update --timeout D` moves the current run's to D from now.
// The container's monitor (its log helper, or a foreground run) watches it,
// so it holds with no service or daemon running: what the sandbox service
// (internal/sandboxsvc) relies on to end untrusted code in time.

// deadlineTick is how often a monitor looks at its container's deadline.
const deadlineTick = time.Second

// deadline is when the container's current run is stopped (zero: never).
func (r *ctrRecord) deadline() time.Time {
	switch {
	case r.StartedAt.IsZero():
		return time.Time{}
	case !r.DeadlineFor.IsZero() && r.DeadlineFor.Equal(r.StartedAt):
		return r.Deadline
	case r.Timeout > 0:
		return r.StartedAt.Add(r.Timeout)
	}
	return time.Time{}
}

// watchDeadline stops container id once its deadline passes, as lodge stop
// does (its policy does not start it again), until ctx ends.
func (a *app) watchDeadline(ctx context.Context, id string) {
	t := time.NewTicker(deadlineTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := loadCtr(id)
		if err != nil {
			return
		}
		d := r.deadline()
		if d.IsZero() || time.Now().Before(d) {
			continue
		}
		if _, running := r.status(); !running {
			continue
		}
		a.log.Info("the container's deadline passed: stopping it", "container_id", id, "deadline", d.Format(time.RFC3339))
		if err := stopCtr(a, r, r.stopTimeout()); err != nil {
			a.log.Warn("stop at the deadline", "container_id", id, "err", err)
		}
		return
	}
}
