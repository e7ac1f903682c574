package integration

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pausedSandbox is a sandbox as the API shows it, with its pause.
type pausedSandbox struct {
	ID          string    `json:"id"`
	State       string    `json:"state"`
	PausedAt    time.Time `json:"paused_at"`
	LeftSeconds int       `json:"left_seconds"`
	ExpiresAt   time.Time `json:"expires_at"`
	Error       string    `json:"error"`
}

// TestSandboxPause: a paused sandbox's processes stop where they are and
// go on from there at its resume, with their memory; nothing runs in it
// meanwhile; a sandbox made with on_timeout pause is paused at its
// deadline by its container's monitor (lodge run --on-timeout pause), and
// a paused one is removed like any other.
func TestSandboxPause(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)

	// lodge run --on-timeout pause, no service: the deadline pauses it,
	// and a deadline given while it is paused stops it.
	id := strings.TrimSpace(l.must("run", "-d", "--timeout", "2s", "--on-timeout", "pause", ref, "sleep", "600"))
	waitStatus := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			st := strings.TrimSpace(l.must("ps", "-a", "--filter", "id="+id, "--format", "{{.Status}}"))
			if strings.HasPrefix(st, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("container %s: %q, want %s", id, st, want)
			}
		}
	}
	waitStatus("Up (Paused)")
	l.must("update", "--timeout", "1s", id)
	waitStatus("Exited (137)")
	l.must("rm", id)

	sock, _ := serveSandboxes(l, ref, "--max-paused", "10m")
	api := newSandboxAPI(t, sock)
	var a pausedSandbox
	if code := api.call("POST", "/v1/sandboxes", map[string]any{"timeout_seconds": 600}, &a); code != 201 {
		t.Fatalf("create: %d %+v", code, a)
	}
	// A counter in a shell's memory, written out five times a second.
	var bg struct {
		ID string `json:"command_id"`
	}
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"background": true,
		"cmd": "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done"}, &bg); code != 202 {
		t.Fatalf("background: %d", code)
	}
	count := func() int {
		t.Helper()
		r := api.command(a.ID, map[string]any{"cmd": "cat /tmp/count"})
		n, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
		if err != nil {
			t.Fatalf("count: %+v", r)
		}
		return n
	}
	time.Sleep(time.Second)
	before := count()
	var p pausedSandbox
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/pause", nil, &p); code != 200 || p.PausedAt.IsZero() || p.LeftSeconds < 500 {
		t.Fatalf("pause: %d %+v", code, p)
	}
	// Its figures, paused as running: the counter's shell, its sleeps,
	// tini and the sandbox's sleep.
	var m struct {
		CPU      float64 `json:"cpu_used_pct"`
		MemUsed  uint64  `json:"mem_used"`
		MemTotal uint64  `json:"mem_total"`
		PIDs     uint64  `json:"pids"`
	}
	if code := api.call("GET", "/v1/sandboxes/"+a.ID+"/metrics", nil, &m); code != 200 || m.PIDs < 3 || m.MemUsed == 0 || m.MemTotal <= m.MemUsed || m.MemTotal > 1<<40 || m.CPU > 5 {
		t.Errorf("metrics of a paused sandbox: %d %+v, want its processes, memory and limit, and no CPU", code, m)
	}
	var e map[string]string
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"cmd": "true"}, &e); code != 409 || !strings.Contains(e["error"], "paused") {
		t.Errorf("a command while paused: %d %v", code, e)
	}
	var list []pausedSandbox
	api.call("GET", "/v1/sandboxes", nil, &list)
	if len(list) != 1 || list[0].State != "paused" {
		t.Errorf("list: %+v", list)
	}
	if st := strings.TrimSpace(l.must("ps", "--filter", "name="+a.ID, "--format", "{{.Status}}")); st != "Up (Paused)" {
		t.Errorf("lodge ps: %q", st)
	}
	time.Sleep(5 * time.Second) // 25 steps of the counter, were it running
	var r pausedSandbox
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/resume", nil, &r); code != 200 || !r.PausedAt.IsZero() {
		t.Fatalf("resume: %d %+v", code, r)
	}
	if left := time.Until(r.ExpiresAt); left < 500*time.Second || left > 600*time.Second {
		t.Errorf("after the resume it ends in %v, want the time it had left at its pause (%d s)", left, p.LeftSeconds)
	}
	// The same process went on from where it was: its count neither
	// started again nor moved while it was paused.
	after := count()
	t.Logf("count %d before the pause, %d after the resume", before, after)
	if after <= before || after-before > 15 {
		t.Errorf("count %d before the pause, %d after the resume: want a few more (5 s paused would be 25)", before, after)
	}
	// Its life as the service tells it, kept for one who follows later.
	req, _ := http.NewRequest("GET", "http://lodge/v1/events?replay=true&sandbox="+a.ID, nil)
	if resp, err := api.c.Do(req); err != nil {
		t.Errorf("events: %v", err)
	} else {
		sc := bufio.NewScanner(resp.Body)
		var got []string
		for len(got) < 3 && sc.Scan() {
			var e struct{ Type, Why string }
			json.Unmarshal(sc.Bytes(), &e)
			got = append(got, e.Type)
		}
		resp.Body.Close()
		if strings.Join(got, " ") != "created paused resumed" {
			t.Errorf("its events: %q", got)
		}
	}
	var cmd struct {
		Running bool `json:"running"`
	}
	if api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+bg.ID, nil, &cmd); !cmd.Running {
		t.Errorf("the background command after the resume: not running")
	}

	// on_timeout pause: paused at its deadline, with what it wrote; with
	// auto_resume, a command resumes it, with the default life.
	var b pausedSandbox
	if code := api.call("POST", "/v1/sandboxes", map[string]any{"timeout_seconds": 3, "on_timeout": "pause", "auto_resume": true}, &b); code != 201 {
		t.Fatalf("create: %d %+v", code, b)
	}
	if code := api.call("PUT", "/v1/sandboxes/"+b.ID+"/files?path=/tmp/keep", []byte("kept"), nil); code != 204 {
		t.Fatalf("write: %d", code)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		var got pausedSandbox
		api.call("GET", "/v1/sandboxes/"+b.ID, nil, &got)
		if !got.PausedAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("on_timeout pause: %+v, not paused a minute after its deadline", got)
		}
	}
	if res := api.command(b.ID, map[string]any{"cmd": "cat /tmp/keep"}); res.Stdout != "kept" {
		t.Errorf("a command after an on_timeout pause: %+v", res)
	}
	var got pausedSandbox
	api.call("GET", "/v1/sandboxes/"+b.ID, nil, &got)
	if left := time.Until(got.ExpiresAt); !got.PausedAt.IsZero() || left < 4*time.Minute || left > 5*time.Minute {
		t.Errorf("resumed by a command: %+v (ends in %v), want it running for the default 5m", got, left)
	}

	// A paused sandbox is removed as any is: nothing of it is left.
	if code := api.call("POST", "/v1/sandboxes/"+b.ID+"/pause", nil, nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	for _, sb := range []string{a.ID, b.ID} {
		if code := api.call("DELETE", "/v1/sandboxes/"+sb, nil, nil); code != 204 {
			t.Errorf("delete %s: %d", sb, code)
		}
	}
	if ps := strings.TrimSpace(l.must("ps", "-a", "-q")); ps != "" {
		t.Errorf("left: %s", ps)
	}
}
