package cli

import (
	"testing"
	"time"
)

func TestDeadline(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	moved := start.Add(time.Hour)
	for _, tc := range []struct {
		name string
		r    ctrRecord
		want time.Time
	}{
		{"none", ctrRecord{StartedAt: start}, time.Time{}},
		{"never started", ctrRecord{Timeout: time.Minute}, time.Time{}},
		{"--timeout", ctrRecord{StartedAt: start, Timeout: time.Minute}, start.Add(time.Minute)},
		{"moved by update", ctrRecord{StartedAt: start, Timeout: time.Minute, DeadlineFor: start, Deadline: moved}, moved},
		{"taken away by update", ctrRecord{StartedAt: start, Timeout: time.Minute, DeadlineFor: start}, time.Time{}},
		{"an update of an earlier run", ctrRecord{StartedAt: moved, Timeout: time.Minute, DeadlineFor: start, Deadline: start.Add(time.Second)}, moved.Add(time.Minute)},
	} {
		if got := tc.r.deadline(); !got.Equal(tc.want) {
			t.Errorf("%s: deadline %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAtDeadline: what a container's monitor does at its deadline, by
// --on-timeout and the container's state.
func TestAtDeadline(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC)
	before, after := start.Add(30*time.Second), start.Add(2*time.Minute)
	stop := ctrRecord{StartedAt: start, Timeout: time.Minute}
	pause := ctrRecord{StartedAt: start, Timeout: time.Minute, OnTimeout: "pause"}
	// A pause at the deadline takes this run's deadline away, as
	// lodge update --timeout 0 does: nothing more until it gets another.
	paused := ctrRecord{StartedAt: start, Timeout: time.Minute, OnTimeout: "pause", DeadlineFor: start}
	again := ctrRecord{StartedAt: start, Timeout: time.Minute, OnTimeout: "pause", DeadlineFor: start, Deadline: start.Add(90 * time.Second)}
	for _, tc := range []struct {
		name string
		r    ctrRecord
		st   string
		now  time.Time
		want string
	}{
		{"before its deadline", stop, "running", before, ""},
		{"stop at the deadline", stop, "running", after, "stop"},
		{"stop a paused one at its deadline", stop, "paused", after, "stop"},
		{"an ended one", stop, "exited", after, ""},
		{"pause: before", pause, "running", before, ""},
		{"pause at the deadline", pause, "running", after, "pause"},
		{"pause: paused at its deadline (by hand) is stopped", pause, "paused", after, "stop"},
		{"pause: once paused, no deadline", paused, "paused", after.Add(time.Hour), ""},
		{"pause: a deadline given while paused stops it", again, "paused", after, "stop"},
		{"pause: a deadline given after a resume pauses it again", again, "running", after, "pause"},
	} {
		if got := tc.r.atDeadline(tc.st, tc.now); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
