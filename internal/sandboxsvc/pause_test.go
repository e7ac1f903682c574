package sandboxsvc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// lastTimeout is the container's deadline as the service last set it.
func (f *fakeRunner) lastTimeout() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.timeouts) == 0 {
		return 0
	}
	return f.timeouts[len(f.timeouts)-1]
}

func (f *fakeRunner) state(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ctrs[name]
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxPaused: time.Hour})
	now := time.Now()
	f.svc.now = func() time.Time { return now }
	sb := f.create(t, CreateRequest{TimeoutSeconds: 100})
	path := "/v1/sandboxes/" + sb.ID

	now = now.Add(40 * time.Second)
	var p Sandbox
	if code := f.call(t, "POST", path+"/pause", nil, &p); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	if !p.PausedAt.Equal(now) || p.LeftSeconds != 60 || !p.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Errorf("paused: paused_at %v, left %d s, expires %v; want now, 60 s, in an hour", p.PausedAt, p.LeftSeconds, p.ExpiresAt)
	}
	if st, d := f.run.state(sb.ID), f.run.lastTimeout(); st != "paused" || d != time.Hour {
		t.Errorf("the container: %s with a deadline of %v, want paused with one of 1h", st, d)
	}
	var e map[string]string
	if code := f.call(t, "POST", path+"/pause", nil, &e); code != http.StatusConflict {
		t.Errorf("pause of a paused sandbox: %d %v", code, e)
	}
	// What would run in it waits for a resume: refused, and said so.
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", path + "/commands", map[string]any{"cmd": "true"}},
		{"POST", path + "/commands", map[string]any{"cmd": "sleep 9", "background": true}},
		{"POST", path + "/commands", map[string]any{"cmd": "true", "stream": true}},
		{"GET", path + "/files?path=/etc/hostname", nil},
		{"PUT", path + "/files?path=/tmp/x", []byte("x")},
		{"POST", path + "/timeout", map[string]int{"timeout_seconds": 10}},
		{"GET", path + "/ports/8000/", nil},
	} {
		var e map[string]string
		if code := f.call(t, c.method, c.path, c.body, &e); code != http.StatusConflict || !strings.Contains(e["error"], "paused") {
			t.Errorf("%s %s while paused: %d %v, want 409 that says it is paused", c.method, c.path, code, e)
		}
	}
	// Its figures may be read: its VM answers.
	var m Metrics
	if code := f.call(t, "GET", path+"/metrics", nil, &m); code != 200 || m.MemTotal != 256<<20 || m.PIDs != 3 || !m.Timestamp.Equal(now.UTC()) {
		t.Errorf("metrics while paused: %d %+v", code, m)
	}
	// Its files may be kept: lodge commit reads a paused container.
	if code := f.call(t, "POST", path+"/snapshots", map[string]string{"name": "p"}, nil); code != http.StatusCreated {
		t.Errorf("snapshot of a paused sandbox: %d", code)
	}
	var l []Sandbox
	f.call(t, "GET", "/v1/sandboxes", nil, &l)
	if len(l) != 1 || l[0].State != "paused" {
		t.Errorf("list: %+v, want it paused", l)
	}
	for q, want := range map[string]int{"state=paused": 1, "state=running": 0, "state=running&state=paused": 1} {
		f.call(t, "GET", "/v1/sandboxes?"+q, nil, &l)
		if len(l) != want {
			t.Errorf("list ?%s: %d, want %d", q, len(l), want)
		}
	}
	// Past its old deadline, it is kept: a paused sandbox has none.
	now = now.Add(10 * time.Minute)
	f.svc.reapOnce(context.Background())
	if _, err := f.svc.Get(sb.ID); err != nil || f.run.state(sb.ID) != "paused" {
		t.Fatalf("a paused sandbox reaped at its old deadline: %v", err)
	}
	// A record the next service reads.
	f.svc.Close()
	svc2, err := New(Config{Dir: f.dir, MaxPaused: time.Hour}, f.run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := svc2.Get(sb.ID); got.PausedAt.IsZero() || got.LeftSeconds != 60 {
		t.Errorf("after a restart: %+v, want it paused with 60 s left", got)
	}
	svc2.Close()

	// A resume gives back the time it had left.
	var r Sandbox
	if code := f.call(t, "POST", path+"/resume", nil, &r); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	if !r.PausedAt.IsZero() || r.LeftSeconds != 0 || !r.ExpiresAt.Equal(now.Add(60*time.Second)) {
		t.Errorf("resumed: %+v, want it running for 60 s more", r)
	}
	if st, d := f.run.state(sb.ID), f.run.lastTimeout(); st != "running" || d != 60*time.Second {
		t.Errorf("the container: %s with a deadline of %v, want running with one of 60s", st, d)
	}
	if code := f.call(t, "POST", path+"/commands", map[string]any{"cmd": "true"}, nil); code != 200 {
		t.Errorf("a command after a resume: %d", code)
	}
	if code := f.call(t, "POST", path+"/resume", nil, &e); code != http.StatusConflict {
		t.Errorf("resume of a running sandbox: %d %v", code, e)
	}
	// Or what the caller asks, within the service's bounds.
	f.call(t, "POST", path+"/pause", nil, nil)
	if code := f.call(t, "POST", path+"/resume", map[string]int{"timeout_seconds": 7200}, &e); code != http.StatusBadRequest {
		t.Errorf("resume past --max-timeout: %d %v", code, e)
	}
	if code := f.call(t, "POST", path+"/resume", map[string]int{"timeout_seconds": 30}, &r); code != 200 || !r.ExpiresAt.Equal(now.Add(30*time.Second)) {
		t.Errorf("resume for 30 s: %d, expires %v", code, r.ExpiresAt)
	}
	// Paused past --max-paused: removed.
	f.call(t, "POST", path+"/pause", nil, nil)
	now = now.Add(time.Hour + time.Second)
	f.svc.reapOnce(context.Background())
	if _, err := f.svc.Get(sb.ID); err == nil || f.run.state(sb.ID) != "" {
		t.Errorf("a sandbox paused past --max-paused kept")
	}
	for _, op := range []string{"pause", "resume", "metrics"} {
		method := "POST"
		if op == "metrics" {
			method = "GET"
		}
		if code := f.call(t, method, "/v1/sandboxes/sbx-0123456789ab/"+op, nil, &e); code != http.StatusNotFound {
			t.Errorf("%s of no sandbox: %d", op, code)
		}
	}
}

// TestPauseFails: a pause or resume that fails leaves the sandbox as it
// was, and says why.
func TestPauseFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxPaused: time.Hour})
	sb := f.create(t, CreateRequest{TimeoutSeconds: 100})
	path := "/v1/sandboxes/" + sb.ID
	f.run.turnErr = errors.New("lodge pause: the VM exited")
	var e map[string]string
	if code := f.call(t, "POST", path+"/pause", nil, &e); code != 500 || !strings.Contains(e["error"], "the VM exited") {
		t.Errorf("failed pause: %d %v", code, e)
	}
	if got, _ := f.svc.Get(sb.ID); !got.PausedAt.IsZero() || len(f.run.timeouts) != 0 {
		t.Errorf("after a failed pause: %+v, deadlines set %v; want it as it was", got, f.run.timeouts)
	}
	// Paused, but its paused deadline cannot be set: thawed again, so
	// that it never sits paused with a running one's deadline.
	f.run.turnErr, f.run.timeoutErr = nil, errors.New("lodge update: no record")
	if code := f.call(t, "POST", path+"/pause", nil, &e); code != 500 || !strings.Contains(e["error"], "no record") {
		t.Errorf("pause whose deadline failed: %d %v", code, e)
	}
	if got, _ := f.svc.Get(sb.ID); !got.PausedAt.IsZero() || f.run.state(sb.ID) != "running" {
		t.Errorf("after it: %+v, container %s; want it running", got, f.run.state(sb.ID))
	}
	f.run.timeoutErr = nil
	if code := f.call(t, "POST", path+"/pause", nil, nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	f.run.turnErr = errors.New("lodge unpause: the VM exited")
	if code := f.call(t, "POST", path+"/resume", nil, &e); code != 500 || !strings.Contains(e["error"], "the VM exited") {
		t.Errorf("failed resume: %d %v", code, e)
	}
	if got, _ := f.svc.Get(sb.ID); got.PausedAt.IsZero() || f.run.lastTimeout() < 59*time.Minute {
		t.Errorf("after a failed resume: %+v, deadline %v; want it paused with its paused deadline", got, f.run.lastTimeout())
	}
}

// TestAutoPause: a sandbox made with on_timeout pause is paused at its
// deadline (by its container's monitor, or by the reaper where the
// monitor did not), not removed.
func TestAutoPause(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxPaused: time.Hour, DefaultTimeout: time.Minute})
	now := time.Now()
	f.svc.now = func() time.Time { return now }
	var e map[string]string
	if code := f.call(t, "POST", "/v1/sandboxes", CreateRequest{OnTimeout: "sleep"}, &e); code != http.StatusBadRequest {
		t.Errorf("on_timeout sleep: %d %v", code, e)
	}
	sb := f.create(t, CreateRequest{TimeoutSeconds: 10, OnTimeout: "pause"})
	if sb.OnTimeout != "pause" || f.run.created[len(f.run.created)-1].OnTimeout != "pause" {
		t.Errorf("made: %+v, its container's on-timeout %q", sb, f.run.created[len(f.run.created)-1].OnTimeout)
	}
	plain := f.create(t, CreateRequest{TimeoutSeconds: 10, OnTimeout: "kill"})

	// At the deadline, its monitor's pause is waited for; the other is
	// removed.
	now = now.Add(11 * time.Second)
	f.svc.reapOnce(context.Background())
	if got, err := f.svc.Get(sb.ID); err != nil || !got.PausedAt.IsZero() {
		t.Errorf("at its deadline, before its monitor paused it: %+v %v, want it kept as it is", got, err)
	}
	if _, err := f.svc.Get(plain.ID); err == nil {
		t.Errorf("on_timeout kill: kept past its deadline")
	}
	// Its monitor paused it (and took its deadline away): taken as paused.
	f.run.ctrs[sb.ID] = "paused"
	f.svc.reapOnce(context.Background())
	got, _ := f.svc.Get(sb.ID)
	if got.PausedAt.IsZero() || got.LeftSeconds != 0 || f.run.lastTimeout() != time.Hour {
		t.Errorf("paused by its monitor: %+v, deadline %v; want paused, none left, removed in an hour", got, f.run.lastTimeout())
	}
	// A resume with nothing left gives the default life.
	var r Sandbox
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/resume", nil, &r); code != 200 || !r.ExpiresAt.Equal(now.Add(time.Minute)) {
		t.Errorf("resume: %d, expires %v, want in a minute", code, r.ExpiresAt)
	}
	// A monitor that does not pause it: the reaper does, a little after.
	now = now.Add(time.Minute + monitorGrace + time.Second)
	f.svc.reapOnce(context.Background())
	if got, _ := f.svc.Get(sb.ID); got.PausedAt.IsZero() || f.run.state(sb.ID) != "paused" {
		t.Errorf("past its deadline and its monitor's grace: %+v, container %s; want it paused", got, f.run.state(sb.ID))
	}
	// Thawed by hand (lodge unpause): running again, with a deadline.
	f.run.ctrs[sb.ID] = "running"
	f.svc.reapOnce(context.Background())
	if got, _ := f.svc.Get(sb.ID); !got.PausedAt.IsZero() || !got.ExpiresAt.Equal(now.Add(time.Minute)) || f.run.lastTimeout() != time.Minute {
		t.Errorf("thawed by hand: %+v, deadline %v; want it running with the default life", got, f.run.lastTimeout())
	}
}

// TestAutoResume: a paused sandbox made with auto_resume is resumed by a
// call that needs it running, with the time it had left; the calls go on.
func TestAutoResume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxPaused: time.Hour})
	now := time.Now()
	f.svc.now = func() time.Time { return now }
	sb := f.create(t, CreateRequest{TimeoutSeconds: 100, AutoResume: true})
	path := "/v1/sandboxes/" + sb.ID
	if !sb.AutoResume {
		t.Errorf("made: %+v, want auto_resume", sb)
	}
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"POST", path + "/commands", map[string]any{"cmd": "true"}, 200},
		{"POST", path + "/commands", map[string]any{"cmd": "sleep 9", "background": true}, 202},
		{"GET", path + "/files?path=/etc/hostname", nil, 200},
	} {
		now = now.Add(10 * time.Second)
		if code := f.call(t, "POST", path+"/pause", nil, nil); code != 200 {
			t.Fatalf("pause: %d", code)
		}
		got, _ := f.svc.Get(sb.ID)
		left := time.Duration(got.LeftSeconds) * time.Second
		now = now.Add(time.Minute)
		if code := f.call(t, c.method, c.path, c.body, nil); code != c.want {
			t.Errorf("%s %s of a paused auto_resume sandbox: %d, want %d", c.method, c.path, code, c.want)
		}
		got, _ = f.svc.Get(sb.ID)
		if !got.PausedAt.IsZero() || f.run.state(sb.ID) != "running" || !got.ExpiresAt.Equal(now.Add(left)) {
			t.Errorf("after %s %s: %+v, container %s; want it running for the %v it had left", c.method, c.path, got, f.run.state(sb.ID), left)
		}
	}
	// Calls at once: one resumes it, the others wait for that and go on.
	f.call(t, "POST", path+"/pause", nil, nil)
	codes := make(chan int, 4)
	for range 4 {
		go func() { codes <- f.call(t, "POST", path+"/commands", map[string]any{"cmd": "true"}, nil) }()
	}
	for range 4 {
		if code := <-codes; code != 200 {
			t.Errorf("a command among four at once on a paused auto_resume sandbox: %d", code)
		}
	}
	// A resume that fails says so.
	f.call(t, "POST", path+"/pause", nil, nil)
	f.run.turnErr = errors.New("lodge unpause: the VM exited")
	var e map[string]string
	if code := f.call(t, "POST", path+"/commands", map[string]any{"cmd": "true"}, &e); code != 500 || !strings.Contains(e["error"], "its resume failed") {
		t.Errorf("a command whose resume failed: %d %v", code, e)
	}
}
