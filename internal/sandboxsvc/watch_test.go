package sandboxsvc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeWatch hands on the events a test sends it.
type fakeWatch struct {
	name, dir string
	recursive bool
	events    chan FileEvent // closed: the watch ended
	closed    chan struct{}
	once      sync.Once
}

func (w *fakeWatch) Next() (FileEvent, error) {
	select {
	case e, ok := <-w.events:
		if !ok {
			return FileEvent{}, io.EOF
		}
		return e, nil
	case <-w.closed:
		return FileEvent{}, io.ErrClosedPipe
	}
}

func (w *fakeWatch) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

func TestWatchAPI(t *testing.T) {
	f := newFixture(t, Config{})
	f.run.watched = make(chan *fakeWatch, 16)
	sb := f.create(t, CreateRequest{})
	base := f.srv.URL + "/v1/sandboxes/" + sb.ID + "/files/watch"

	resp, err := http.Get(base + "?path=/work&recursive=true")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	w := <-f.run.watched
	if w.name != sb.ID || w.dir != "/work" || !w.recursive {
		t.Errorf("watch of %s %s recursive %v", w.name, w.dir, w.recursive)
	}
	at := time.Date(2026, 12, 8, 1, 2, 3, 0, time.UTC)
	sent := []FileEvent{{Type: "create", Name: "a", Path: "/work/a", Time: at}, {Type: "remove", Name: "b", Path: "/work/b", Dir: true, Time: at}}
	sc := bufio.NewScanner(resp.Body)
	for _, e := range sent {
		w.events <- e
		if !sc.Scan() {
			t.Fatalf("the stream ended: %v", sc.Err())
		}
		var got FileEvent
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil || got != e {
			t.Errorf("got %s (%v), want %+v", sc.Text(), err, e)
		}
	}
	// The watch ends (its directory went): so does the stream.
	close(w.events)
	if sc.Scan() {
		t.Errorf("more after the end: %s", sc.Text())
	}
	resp.Body.Close()

	// A caller that goes away ends its watch.
	resp, err = http.Get(base + "?path=/work")
	if err != nil {
		t.Fatal(err)
	}
	w = <-f.run.watched
	resp.Body.Close()
	select {
	case <-w.closed:
	case <-time.After(5 * time.Second):
		t.Error("the watch outlived its caller")
	}

	// At most maxSandboxWatches at once.
	var open []*http.Response
	for range maxSandboxWatches {
		resp, err := http.Get(base + "?path=/")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("watch: %v %v", resp, err)
		}
		open = append(open, resp)
		<-f.run.watched
	}
	var e map[string]string
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files/watch?path=/", nil, &e); code != http.StatusTooManyRequests {
		t.Errorf("watch beyond the bound: %d %v", code, e)
	}
	for _, r := range open {
		r.Body.Close()
	}

	for query, want := range map[string]int{"?path=rel": 400, "?path=/&recursive=yes": 400, "": 400} {
		if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files/watch"+query, nil, &e); code != want {
			t.Errorf("%q: %d %v, want %d", query, code, e, want)
		}
	}
	if code := f.call(t, "GET", "/v1/sandboxes/sbx-none/files/watch?path=/", nil, &e); code != http.StatusNotFound {
		t.Errorf("no such sandbox: %d %v", code, e)
	}
	f.run.watchErr = errFile{"watch /x: no such file or directory"}
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files/watch?path=/x", nil, &e); code != http.StatusNotFound || e["error"] != "watch /x: no such file or directory" {
		t.Errorf("refused: %d %v", code, e)
	}
	f.run.watchErr = nil
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/pause", nil, nil); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files/watch?path=/", nil, &e); code != http.StatusConflict {
		t.Errorf("paused: %d %v", code, e)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		f.svc.mu.Lock()
		left := len(f.svc.watches)
		f.svc.mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts left: %d sandboxes", left)
		}
	}
}

// lodgeScript is a stand-in for the lodge command: a shell script.
func lodgeScript(t *testing.T, body string) LodgeRunner {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lodge")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return LodgeRunner{Bin: p}
}

func TestLodgeRunnerWatch(t *testing.T) {
	ctx := context.Background()
	// Refused: lodge's words, as a file error (404).
	l := lodgeScript(t, `echo "lodge: container x: watch /none: no such file or directory" >&2; exit 1`)
	_, err := l.Watch(ctx, "x", "/none", false)
	var fe errFile
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "container x: watch /none: no such file") {
		t.Errorf("refusal: %v", err)
	}

	// In place: its events, then its end at Close.
	pidFile := filepath.Join(t.TempDir(), "pid")
	l = lodgeScript(t, `echo $$ > `+pidFile+`; [ "$1 $2 $3 $4 $5 $6 $7" = "watch --format json -r -- x /w" ] || exit 3
echo '{"type":"watching","path":"/w","dir":true,"time":"2026-12-08T00:00:00Z"}'
echo '{"type":"create","name":"a","path":"/w/a","time":"2026-12-08T00:00:01Z"}'
exec sleep 600`)
	w, err := l.Watch(ctx, "x", "/w", true)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := w.Next(); err != nil || e.Type != "create" || e.Path != "/w/a" || e.Time.IsZero() {
		t.Errorf("next: %+v %v", e, err)
	}
	w.Close()
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 || syscall.Kill(pid, 0) == nil {
		t.Errorf("lodge watch (pid %d) left running after Close", pid)
	}

	// Silent until the caller gives up: ended, nothing left.
	l = lodgeScript(t, `echo $$ > `+pidFile+`; exec sleep 600`)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := l.Watch(cctx, "x", "/w", false); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a watch never in place: %v", err)
	}
	b, _ = os.ReadFile(pidFile)
	if pid, _ = strconv.Atoi(strings.TrimSpace(string(b))); pid == 0 || syscall.Kill(pid, 0) == nil {
		t.Errorf("lodge watch (pid %d) left running", pid)
	}
}
