package cli

import (
	"context"
	"time"
)

// A container's deadline: `lodge run --timeout D` stops each run D after it
// starts; `lodge update --timeout D` moves the current run's to D from now.
// The container's monitor (its log helper, or a foreground run) watches it,
// so it holds with no service or daemon running: what the sandbox service
// (internal/sandboxsvc) relies on to end untrusted code in time. With
// `--on-timeout pause` the deadline pauses a running container instead
// (the sandbox service's "on_timeout": "pause"), and the next deadline of
// a paused one stops it.

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

// atDeadline is what container r's monitor does now, its state st:
// "" (nothing yet, or it is not running), "pause" (--on-timeout pause, and
// it runs) or "stop" (a paused container's deadline stops it).
func (r *ctrRecord) atDeadline(st string, now time.Time) string {
	d := r.deadline()
	switch {
	case d.IsZero() || now.Before(d):
		return ""
	case st == "running" && r.OnTimeout == "pause":
		return "pause"
	case st == "running" || st == "paused":
		return "stop"
	}
	return ""
}

// watchDeadline stops container id once its deadline passes, as lodge stop
// does (its policy does not start it again), or with --on-timeout pause
// pauses it, its run then without a deadline until lodge update gives it
// one; until ctx ends.
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
		st, _ := r.status()
		switch r.atDeadline(st, time.Now()) {
		case "pause":
			a.log.Info("the container's deadline passed: pausing it", "container_id", id, "deadline", r.deadline().Format(time.RFC3339))
			if err := runtimeOp(a, "pause", id); err != nil {
				a.log.Warn("pause at the deadline", "container_id", id, "err", err)
				continue
			}
			r.emit("pause")
			if _, err := updateCtr(ctx, id, func(c *ctrRecord) { c.Deadline, c.DeadlineFor = time.Time{}, c.StartedAt }); err != nil {
				a.log.Warn("pause at the deadline: record", "container_id", id, "err", err)
			}
		case "stop":
			a.log.Info("the container's deadline passed: stopping it", "container_id", id, "deadline", r.deadline().Format(time.RFC3339))
			if err := stopCtr(a, r, r.stopTimeout()); err != nil {
				a.log.Warn("stop at the deadline", "container_id", id, "err", err)
			}
			return
		}
	}
}
