package sandboxsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// fakeRunner is lodge's containers as a map; exec runs a Go function.
type fakeRunner struct {
	mu        sync.Mutex
	ctrs      map[string]string // name -> state
	owners    map[string]string // name -> Label's value
	created   []CreateArgs
	removed   []string
	timeouts  []time.Duration
	createErr error
	turnErr   error // Pause's and Resume's
	// timeoutErr, if set, is SetTimeout's.
	timeoutErr error
	exec       func(name string, x ExecArgs) int
	images     map[string]bool
	egress     []egressCall
	bridgeIP   string // a bridged sandbox's address, if not 10.87.0.9
	// dial makes DialPort's connections (nil: nothing listens).
	dial func(name string, port uint16) (net.Conn, error)
	// watchErr, if set, is Watch's; watched, the watches it opened.
	watchErr error
	watched  chan *fakeWatch
}

func (f *fakeRunner) Watch(_ context.Context, name, dir string, recursive bool) (Watcher, error) {
	if f.watchErr != nil {
		return nil, f.watchErr
	}
	w := &fakeWatch{name: name, dir: dir, recursive: recursive, events: make(chan FileEvent, 16), closed: make(chan struct{})}
	if f.watched != nil {
		f.watched <- w
	}
	return w, nil
}

func (f *fakeRunner) DialPort(_ context.Context, name string, port uint16) (net.Conn, error) {
	if f.dial == nil {
		return nil, &portError{msg: "connection refused"}
	}
	return f.dial(name, port)
}

func (f *fakeRunner) SetEgress(_ context.Context, name string, e Egress) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.egress = append(f.egress, egressCall{name, e})
	return nil
}

type egressCall struct {
	name string
	e    Egress
}

func (f *fakeRunner) Create(_ context.Context, c CreateArgs) (Created, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, c)
	if f.createErr != nil {
		f.ctrs[c.Name] = "created" // what a failed run may leave
		return Created{}, f.createErr
	}
	f.ctrs[c.Name] = "running"
	f.owners[c.Name] = c.Owner
	made := Created{ID: fmt.Sprintf("%064x", len(f.created))}
	switch {
	case c.Network == "bridge" && f.bridgeIP != "":
		made.IP = f.bridgeIP
	case c.Network == "bridge":
		made.IP = "10.87.0.9"
	}
	return made, nil
}

func (f *fakeRunner) Exec(_ context.Context, name string, x ExecArgs) (int, error) {
	f.mu.Lock()
	_, ok := f.ctrs[name]
	f.mu.Unlock()
	if !ok {
		return 0, errors.New("no such container")
	}
	return f.exec(name, x), nil
}

func (f *fakeRunner) SetTimeout(_ context.Context, name string, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ctrs[name]; !ok {
		return errors.New("no such container")
	}
	if f.timeoutErr != nil {
		return f.timeoutErr
	}
	f.timeouts = append(f.timeouts, d)
	return nil
}

func (f *fakeRunner) Remove(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, name)
	if _, ok := f.ctrs[name]; !ok {
		return errors.New("no such container")
	}
	delete(f.ctrs, name)
	return nil
}

func (f *fakeRunner) List(_ context.Context, owner string) ([]Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Container
	for n, st := range f.ctrs {
		if f.owners[n] == owner {
			out = append(out, Container{Name: n, State: st})
		}
	}
	return out, nil
}

func (f *fakeRunner) Commit(_ context.Context, name, image string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ctrs[name]; !ok {
		return errors.New("no such container: " + name)
	}
	if f.images == nil {
		f.images = map[string]bool{}
	}
	f.images[image] = true
	return nil
}

func (f *fakeRunner) Images(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []string{"busybox:latest"}
	for img := range f.images {
		out = append(out, img)
	}
	return out, nil
}

func (f *fakeRunner) RemoveImage(_ context.Context, image string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, image)
	return nil
}

type fixture struct {
	svc *Service
	run *fakeRunner
	srv *httptest.Server
	dir string
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	run := &fakeRunner{ctrs: map[string]string{}, owners: map[string]string{}, exec: func(string, ExecArgs) int { return 0 }}
	svc, err := New(cfg, run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &fixture{svc: svc, run: run, srv: srv, dir: cfg.Dir}
}

// call sends a request and decodes a JSON reply into out (if not nil).
func (f *fixture) call(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if b, ok := out.(*[]byte); ok {
			*b, _ = io.ReadAll(resp.Body)
		} else if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: reply: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func (f *fixture) create(t *testing.T, req CreateRequest) Sandbox {
	t.Helper()
	var sb Sandbox
	if code := f.call(t, "POST", "/v1/sandboxes", req, &sb); code != http.StatusCreated {
		t.Fatalf("create: status %d", code)
	}
	return sb
}

func (f *fakeRunner) Pause(_ context.Context, name string) error {
	return f.turn(name, "running", "paused")
}

func (f *fakeRunner) Resume(_ context.Context, name string) error {
	return f.turn(name, "paused", "running")
}

// turn moves container name from state from to state to, as lodge pause
// and unpause do, or fails as they fail.
func (f *fakeRunner) turn(name, from, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.turnErr != nil {
		return f.turnErr
	}
	st, ok := f.ctrs[name]
	switch {
	case !ok:
		return errors.New("no such container: " + name)
	case st != from:
		return fmt.Errorf("container %s is %s, not %s", name, st, from)
	}
	f.ctrs[name] = to
	return nil
}

func (f *fakeRunner) Metrics(_ context.Context, name string) (Metrics, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.ctrs[name]; !ok {
		return Metrics{}, errors.New("no such container: " + name)
	}
	return Metrics{CPUUsedPct: 12.5, MemUsed: 3 << 20, MemTotal: 256 << 20, PIDs: 3}, nil
}
