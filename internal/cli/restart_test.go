package cli

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want restartPolicy
		err  string
	}{
		{in: "", want: restartPolicy{Name: "no"}},
		{in: "no", want: restartPolicy{Name: "no"}},
		{in: "always", want: restartPolicy{Name: "always"}},
		{in: "unless-stopped", want: restartPolicy{Name: "unless-stopped"}},
		{in: "on-failure", want: restartPolicy{Name: "on-failure"}},
		{in: "on-failure:3", want: restartPolicy{Name: "on-failure", MaximumRetryCount: 3}},
		{in: "on-failure:x", err: "only on-failure takes a count"},
		{in: "on-failure:-1", err: "only on-failure takes a count"},
		{in: "always:2", err: "only on-failure takes a count"},
		{in: "sometimes", err: "want no, always"},
	} {
		got, err := parseRestart(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseRestart(%q): %v, want an error with %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseRestart(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestRestartPolicyRestarts(t *testing.T) {
	t.Parallel()
	code := func(c int) *int { return &c }
	for _, tc := range []struct {
		name   string
		policy string
		r      ctrRecord
		want   bool
	}{
		{"no", "no", ctrRecord{ExitCode: code(1)}, false},
		{"always after success", "always", ctrRecord{ExitCode: code(0)}, true},
		{"always after stop", "always", ctrRecord{ExitCode: code(137), ManuallyStopped: true}, false},
		{"unless-stopped after failure", "unless-stopped", ctrRecord{ExitCode: code(2)}, true},
		{"unless-stopped after stop", "unless-stopped", ctrRecord{ExitCode: code(0), ManuallyStopped: true}, false},
		{"on-failure after success", "on-failure", ctrRecord{ExitCode: code(0)}, false},
		{"on-failure after failure", "on-failure", ctrRecord{ExitCode: code(1), RestartCount: 40}, true},
		{"on-failure, VM lost", "on-failure", ctrRecord{ExitCode: code(0), Error: "the container's VM ended without an exit status"}, true},
		{"on-failure:2, under", "on-failure:2", ctrRecord{ExitCode: code(1), RestartCount: 1}, true},
		{"on-failure:2, reached", "on-failure:2", ctrRecord{ExitCode: code(1), RestartCount: 2}, false},
		{"removed when it ends", "always", ctrRecord{ExitCode: code(1), AutoRemove: true}, false},
	} {
		p, err := parseRestart(tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.restarts(&tc.r); got != tc.want {
			t.Errorf("%s: restarts = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRestartDelay(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	run := func(d, last time.Duration) *ctrRecord {
		return &ctrRecord{StartedAt: t0, FinishedAt: t0.Add(d), RestartBackoff: last}
	}
	for _, tc := range []struct {
		name string
		r    *ctrRecord
		want time.Duration
	}{
		{"first", run(time.Second, 0), 100 * time.Millisecond},
		{"doubles after a short run", run(time.Second, 100*time.Millisecond), 200 * time.Millisecond},
		{"at most a minute", run(time.Second, 50*time.Second), time.Minute},
		{"a long run starts again", run(10*time.Second, 30*time.Second), 100 * time.Millisecond},
		{"never started", &ctrRecord{RestartBackoff: time.Second}, 100 * time.Millisecond},
	} {
		if got := restartDelay(tc.r); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestMonitorLock: a start waits for the last run's monitor and says why
// it gives up; the lock passes on with a descriptor handed to the next
// monitor; record updates keep what another writer changed.
func TestMonitorLock(t *testing.T) {
	saved := containersDir
	containersDir = t.TempDir()
	t.Cleanup(func() { containersDir = saved })
	r := &ctrRecord{ID: strings.Repeat("a", 64), Name: "web"}
	if err := mkdirSave(r); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	held, err := takeMonitor(ctx, r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := takeMonitor(ctx, r, 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), "its last run is still ending") {
		t.Fatalf("a second monitor while one holds the lock: %v", err)
	}
	released := make(chan error, 1)
	go func() {
		f, err := takeMonitor(ctx, r, 5*time.Second)
		if err == nil {
			f.Close()
		}
		released <- err
	}()
	time.Sleep(100 * time.Millisecond)
	held.Close()
	if err := <-released; err != nil {
		t.Fatalf("a start waiting for the monitor to end: %v", err)
	}

	if _, err := updateCtr(ctx, r.ID, func(c *ctrRecord) { c.ManuallyStopped = true }); err != nil {
		t.Fatal(err)
	}
	code := 3
	got, err := updateCtr(ctx, r.ID, func(c *ctrRecord) { c.ExitCode = &code })
	if err != nil || !got.ManuallyStopped || got.ExitCode == nil || *got.ExitCode != 3 || got.Name != "web" {
		t.Errorf("two updates of a record: %+v, %v; want both changes", got, err)
	}
}

func mkdirSave(r *ctrRecord) error {
	if err := os.MkdirAll(ctrDir(r.ID), 0o700); err != nil {
		return err
	}
	return r.save()
}

// TestAskedPorts: a container started again asks for the host ports it
// named, and for a new free one where the kernel picked one before.
func TestAskedPorts(t *testing.T) {
	t.Parallel()
	fixed := portMap{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}
	picked := portMap{HostPort: 0, ContainerPort: 443, Protocol: "tcp"}
	n := &ctrNetwork{Ports: []portMap{fixed, {HostPort: 41234, ContainerPort: 443, Protocol: "tcp"}}, Asked: []portMap{fixed, picked}}
	if got := n.asked(); len(got) != 2 || got[0] != fixed || got[1] != picked {
		t.Errorf("asked() = %v, want %v", got, n.Asked)
	}
	old := &ctrNetwork{Ports: []portMap{fixed}} // a record from before Asked
	if got := old.asked(); len(got) != 1 || got[0] != fixed {
		t.Errorf("asked() of an old record = %v, want its ports", got)
	}
}

// At boot, restore starts what dockerd would at its start: always ones
// that ever ran, unless-stopped ones not stopped by hand, on-failure ones
// whose run the host cut short or that failed within their retries.
func TestBootRestarts(t *testing.T) {
	ran := time.Now().Add(-time.Hour)
	zero, one := 0, 1
	for _, tc := range []struct {
		name string
		r    ctrRecord
		want bool
	}{
		{"no policy", ctrRecord{StartedAt: ran}, false},
		{"no", ctrRecord{StartedAt: ran, RestartPolicy: &restartPolicy{Name: "no"}}, false},
		{"always, running when the host stopped", ctrRecord{StartedAt: ran, RestartPolicy: &restartPolicy{Name: "always"}}, true},
		{"always, stopped by hand", ctrRecord{StartedAt: ran, ManuallyStopped: true, ExitCode: &zero, RestartPolicy: &restartPolicy{Name: "always"}}, true},
		{"always, never started", ctrRecord{RestartPolicy: &restartPolicy{Name: "always"}}, false},
		{"always, --rm", ctrRecord{StartedAt: ran, AutoRemove: true, RestartPolicy: &restartPolicy{Name: "always"}}, false},
		{"unless-stopped", ctrRecord{StartedAt: ran, RestartPolicy: &restartPolicy{Name: "unless-stopped"}}, true},
		{"unless-stopped, stopped by hand", ctrRecord{StartedAt: ran, ManuallyStopped: true, RestartPolicy: &restartPolicy{Name: "unless-stopped"}}, false},
		{"on-failure, cut short", ctrRecord{StartedAt: ran, RestartPolicy: &restartPolicy{Name: "on-failure"}}, true},
		{"on-failure, ended well", ctrRecord{StartedAt: ran, ExitCode: &zero, FinishedAt: ran.Add(time.Minute), RestartPolicy: &restartPolicy{Name: "on-failure"}}, false},
		{"on-failure, failed", ctrRecord{StartedAt: ran, ExitCode: &one, FinishedAt: ran.Add(time.Minute), RestartPolicy: &restartPolicy{Name: "on-failure"}}, true},
		{"on-failure:2, retries spent", ctrRecord{StartedAt: ran, RestartCount: 2, RestartPolicy: &restartPolicy{Name: "on-failure", MaximumRetryCount: 2}}, false},
		{"on-failure, stopped by hand", ctrRecord{StartedAt: ran, ManuallyStopped: true, ExitCode: &one, RestartPolicy: &restartPolicy{Name: "on-failure"}}, false},
		{"on-failure, stopped by the host's shutdown", ctrRecord{StartedAt: ran, HostStopped: true, ExitCode: &zero, FinishedAt: ran.Add(time.Minute), RestartPolicy: &restartPolicy{Name: "on-failure"}}, true},
		{"unless-stopped, stopped by the host's shutdown", ctrRecord{StartedAt: ran, HostStopped: true, ExitCode: &zero, RestartPolicy: &restartPolicy{Name: "unless-stopped"}}, true},
		{"no, stopped by the host's shutdown", ctrRecord{StartedAt: ran, HostStopped: true, RestartPolicy: &restartPolicy{Name: "no"}}, false},
	} {
		if got := bootRestarts(&tc.r); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// While the host shuts down, no policy starts a container again.
	for _, p := range []string{"always", "unless-stopped", "on-failure"} {
		if (restartPolicy{Name: p}).restarts(&ctrRecord{StartedAt: ran, HostStopped: true, ExitCode: &one}) {
			t.Errorf("%s restarts a container the host's shutdown stopped", p)
		}
	}
}
