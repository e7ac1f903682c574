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
