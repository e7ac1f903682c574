package host

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// The host's CPU times are read (every CPU counted), and a keeper's wait
// for a quiet host is bounded.
func TestCPUTimesAndQuietBound(t *testing.T) {
	idle, total, n := cpuTimes()
	if total == 0 || idle > total || n < runtime.NumCPU() {
		t.Fatalf("cpuTimes: idle %d total %d cpus %d (runtime says %d)", idle, total, n, runtime.NumCPU())
	}
	if d := waitQuiet(context.Background(), 0); d > 100*time.Millisecond {
		t.Errorf("waitQuiet with no time to wait took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d := waitQuiet(ctx, time.Minute); d > 400*time.Millisecond {
		t.Errorf("waitQuiet after its context ended took %v", d)
	}
}
