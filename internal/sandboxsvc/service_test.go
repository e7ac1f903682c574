package sandboxsvc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestCreateGetListRemove(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sb := f.create(t, CreateRequest{Env: map[string]string{"B": "2", "A": "1"}, Metadata: map[string]string{"user": "u1"}, TimeoutSeconds: 30})
	if !validID(sb.ID) || sb.Image != "busybox" || sb.Network != "none" {
		t.Fatalf("sandbox %+v: want an sbx- id, the default image and no network", sb)
	}
	// 30 s from the request (its record is made a moment later).
	if d := sb.ExpiresAt.Sub(sb.CreatedAt); d > 30*time.Second || d < 29*time.Second {
		t.Errorf("life %v, want 30s", d)
	}
	// No allow-list and no --allow-pull: lodge's own images only.
	want := CreateArgs{Name: sb.ID, Image: "busybox", Network: "none", Owner: f.svc.owner, Env: []string{"A=1", "B=2"}, Timeout: 30 * time.Second}
	if diff := cmp.Diff([]CreateArgs{want}, f.run.created); diff != "" {
		t.Errorf("runner's create (-want +got):\n%s", diff)
	}
	var got Sandbox
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID, nil, &got); code != 200 || got.Metadata["user"] != "u1" {
		t.Errorf("get: %d %+v", code, got)
	}
	var list []Sandbox
	f.call(t, "GET", "/v1/sandboxes", nil, &list)
	if len(list) != 1 || list[0].ID != sb.ID || list[0].State != "running" {
		t.Errorf("list: %+v", list)
	}
	other := f.create(t, CreateRequest{Metadata: map[string]string{"user": "u2"}})
	for q, want := range map[string][]string{"?metadata.user=u1": {sb.ID}, "?metadata.user=u2": {other.ID}, "?metadata.team=x": nil, "": {sb.ID, other.ID}} {
		var l []Sandbox
		f.call(t, "GET", "/v1/sandboxes"+q, nil, &l)
		var got []string
		for _, x := range l {
			got = append(got, x.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("list%s (-want +got):\n%s", q, diff)
		}
	}
	f.call(t, "DELETE", "/v1/sandboxes/"+other.ID, nil, nil)
	if _, err := os.Stat(filepath.Join(f.dir, sb.ID+".json")); err != nil {
		t.Errorf("no record on disk: %v", err)
	}
	if code := f.call(t, "DELETE", "/v1/sandboxes/"+sb.ID, nil, nil); code != http.StatusNoContent {
		t.Errorf("delete: status %d", code)
	}
	if len(f.run.ctrs) != 0 {
		t.Errorf("containers left: %v", f.run.ctrs)
	}
	if _, err := os.Stat(filepath.Join(f.dir, sb.ID+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record left: %v", err)
	}
	var e map[string]string
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID, nil, &e); code != 404 || !strings.Contains(e["error"], "no such sandbox") {
		t.Errorf("get after delete: %d %v", code, e)
	}
}

func TestCreateRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Images: []string{"busybox", "python:3"}, MaxTimeout: time.Minute, DefaultTimeout: time.Minute})
	for _, tc := range []struct {
		name string
		req  any
		want string
	}{
		{"image not offered", CreateRequest{Image: "alpine"}, "not one this service offers"},
		{"network", CreateRequest{Network: "bridge"}, "no network"},
		{"unknown network", CreateRequest{Network: "host"}, "want none or bridge"},
		{"long life", CreateRequest{TimeoutSeconds: 61}, "want 1 to 60"},
		{"env name", CreateRequest{Env: map[string]string{"A=B": "x"}}, "env"},
		{"memory flag", CreateRequest{Memory: "--privileged"}, "memory"},
		{"disk flag", CreateRequest{Disk: "--privileged"}, "disk"},
		{"disk options", CreateRequest{Disk: "4g,size=9t"}, "disk"},
		{"unknown field", map[string]any{"imag": "busybox"}, "unknown field"},
	} {
		var e map[string]string
		if code := f.call(t, "POST", "/v1/sandboxes", tc.req, &e); code != 400 || !strings.Contains(e["error"], tc.want) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.name, code, e["error"], tc.want)
		}
	}
	if len(f.run.created) != 0 {
		t.Errorf("refused requests made containers: %+v", f.run.created)
	}
	if _, err := New(Config{Dir: t.TempDir(), Images: []string{"a"}, DefaultImage: "b"}, f.run, f.svc.log); err == nil {
		t.Errorf("a default image outside the offered ones was taken")
	}
	// An image of the allow-list may be pulled; the first is the default.
	f.create(t, CreateRequest{Image: "python:3", Disk: "4g"})
	f.create(t, CreateRequest{})
	if d := f.run.created[0].Disk; d != "4g" {
		t.Errorf("disk: its container's %q, want 4g", d)
	}
	if len(f.run.created) != 2 || !f.run.created[0].Pull || f.run.created[1].Image != "busybox" {
		t.Errorf("an allowed image: %+v, want it pulled where missing", f.run.created)
	}
}

func TestCreateLimitAndFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxSandboxes: 1})
	f.create(t, CreateRequest{})
	var e map[string]string
	if code := f.call(t, "POST", "/v1/sandboxes", CreateRequest{}, &e); code != http.StatusTooManyRequests || !strings.Contains(e["error"], "1 alive") {
		t.Errorf("second sandbox of 1: %d %v", code, e)
	}

	g := newFixture(t, Config{})
	g.run.createErr = errors.New("lodge run: image nope: not found")
	if code := g.call(t, "POST", "/v1/sandboxes", CreateRequest{Image: "nope"}, &e); code != 500 || !strings.Contains(e["error"], "image nope: not found") {
		t.Errorf("failed create: %d %v", code, e)
	}
	if len(g.run.ctrs) != 0 || len(g.svc.boxes) != 0 {
		t.Errorf("a failed create left containers %v or records %v", g.run.ctrs, g.svc.boxes)
	}
	if recs, _ := filepath.Glob(filepath.Join(g.dir, "*.json")); len(recs) != 0 {
		t.Errorf("a failed create left records: %v", recs)
	}
}

func TestReap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	now := time.Now()
	f.svc.now = func() time.Time { return now }
	short := f.create(t, CreateRequest{TimeoutSeconds: 10})
	long := f.create(t, CreateRequest{TimeoutSeconds: 100})
	gone := f.create(t, CreateRequest{TimeoutSeconds: 100})
	delete(f.run.ctrs, gone.ID)                // someone ran lodge rm
	f.run.ctrs["sbx-0123456789ab"] = "running" // a service died making it
	f.run.owners["sbx-0123456789ab"] = f.svc.owner
	f.run.ctrs["sbx-aaaaaaaaaaaa"] = "running" // another service's
	f.run.owners["sbx-aaaaaaaaaaaa"] = "other"
	f.run.ctrs["web"] = "running" // not a service's

	// Extending the short one's life keeps it past its first deadline.
	var ext Sandbox
	now = now.Add(5 * time.Second)
	if code := f.call(t, "POST", "/v1/sandboxes/"+short.ID+"/timeout", map[string]int{"timeout_seconds": 20}, &ext); code != 200 {
		t.Fatalf("timeout: %d", code)
	}
	if len(f.run.timeouts) != 1 || f.run.timeouts[0] != 20*time.Second {
		t.Errorf("the container's own deadline: moves %v, want one of 20s", f.run.timeouts)
	}
	now = now.Add(15 * time.Second)
	f.svc.reapOnce(context.Background())
	if _, err := f.svc.Get(short.ID); err != nil {
		t.Errorf("extended sandbox reaped before its new deadline: %v", err)
	}
	if _, err := f.svc.Get(gone.ID); err == nil {
		t.Errorf("record of a removed container kept")
	}
	if _, ok := f.run.ctrs["sbx-0123456789ab"]; ok {
		t.Errorf("container without a record kept")
	}
	if _, ok := f.run.ctrs["web"]; !ok {
		t.Errorf("a container not the service's was removed")
	}
	if _, ok := f.run.ctrs["sbx-aaaaaaaaaaaa"]; !ok {
		t.Errorf("another service's container was removed")
	}
	now = now.Add(10 * time.Second)
	f.svc.reapOnce(context.Background())
	if _, err := f.svc.Get(short.ID); err == nil {
		t.Errorf("expired sandbox kept")
	}
	if _, ok := f.run.ctrs[short.ID]; ok {
		t.Errorf("expired sandbox's container kept")
	}
	if _, err := f.svc.Get(long.ID); err != nil {
		t.Errorf("live sandbox reaped: %v", err)
	}

	// A new service on the same directory knows the live one, once the
	// first has let go of it.
	if _, err := New(Config{Dir: f.dir}, f.run, f.svc.log); err == nil || !strings.Contains(err.Error(), "another running service") {
		t.Errorf("a second service on a directory in use: %v", err)
	}
	f.svc.Close()
	svc2, err := New(Config{Dir: f.dir}, f.run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := svc2.Get(long.ID); err != nil || !got.ExpiresAt.Equal(long.ExpiresAt) {
		t.Errorf("after a restart: %+v %v, want %+v", got, err, long)
	}
}

func TestCommands(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxOutput: 8})
	sb := f.create(t, CreateRequest{})
	var got ExecArgs
	f.run.exec = func(_ string, x ExecArgs) int {
		got = x
		io.WriteString(x.Stdout, "0123456789")
		io.WriteString(x.Stderr, "oops")
		if x.Stdin != nil {
			b, _ := io.ReadAll(x.Stdin)
			x.Stdout.Write(b)
		}
		return 3
	}
	var res CommandResult
	in := "in"
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Cmd: "echo hi", Cwd: "/tmp", Env: map[string]string{"X": "1"}, Stdin: &in, TimeoutSeconds: 5}, &res); code != 200 {
		t.Fatalf("command: %d", code)
	}
	if diff := cmp.Diff([]string{"/bin/sh", "-c", "echo hi"}, got.Argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	if got.Dir != "/tmp" || got.Timeout != 5*time.Second || len(got.Env) != 1 || got.Env[0] != "X=1" {
		t.Errorf("exec args %+v", got)
	}
	if res.ExitCode != 3 || res.Stdout != "01234567" || !res.StdoutTruncated || res.Stderr != "oops" || res.StderrTruncated {
		t.Errorf("result %+v: want exit 3, stdout cut at 8 bytes, stderr whole", res)
	}

	// Streamed: output events, then the result.
	f.run.exec = func(_ string, x ExecArgs) int {
		io.WriteString(x.Stdout, "a")
		io.WriteString(x.Stderr, "b")
		return 0
	}
	j, _ := json.Marshal(CommandRequest{Argv: []string{"true"}, Stream: true})
	resp, err := http.Post(f.srv.URL+"/v1/sandboxes/"+sb.ID+"/commands", "application/json", bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	var evs []Event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var e Event
		json.Unmarshal(sc.Bytes(), &e)
		evs = append(evs, e)
	}
	resp.Body.Close()
	want := []Event{{Stdout: "a"}, {Stderr: "b"}, {Result: &CommandResult{}}}
	if diff := cmp.Diff(want, evs, cmp.Comparer(func(a, b *CommandResult) bool {
		return (a == nil) == (b == nil) && (a == nil || a.ExitCode == b.ExitCode)
	})); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}

	var e map[string]string
	for _, tc := range []struct {
		id   string
		req  CommandRequest
		code int
	}{
		{sb.ID, CommandRequest{}, 400},
		{sb.ID, CommandRequest{Cmd: "x", Argv: []string{"y"}}, 400},
		{sb.ID, CommandRequest{Cmd: "x", Cwd: "rel"}, 400},
		{sb.ID, CommandRequest{Cmd: "x", User: "--privileged"}, 400},
		{"sbx-000000000000", CommandRequest{Cmd: "x"}, 404},
		{"sbx-000000000000", CommandRequest{Cmd: "x", Stream: true}, 404},
	} {
		if code := f.call(t, "POST", "/v1/sandboxes/"+tc.id+"/commands", tc.req, &e); code != tc.code {
			t.Errorf("%+v: status %d (%v), want %d", tc.req, code, e, tc.code)
		}
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxFile: 16})
	sb := f.create(t, CreateRequest{})
	files := map[string][]byte{}
	f.run.exec = func(_ string, x ExecArgs) int {
		switch x.Argv[0] {
		case "cat":
			b, ok := files[x.Argv[2]]
			if !ok {
				io.WriteString(x.Stderr, "cat: "+x.Argv[2]+": No such file or directory\n")
				return 1
			}
			x.Stdout.Write(b)
		case "/bin/sh":
			key := x.Argv[4]
			if strings.Contains(x.Argv[2], "tar -x") {
				key = "tar:" + key
			}
			files[key], _ = io.ReadAll(x.Stdin)
		case "tar":
			b, ok := files["tar:"+x.Argv[5]]
			if !ok {
				io.WriteString(x.Stderr, "tar: can't change directory to '"+x.Argv[5]+"': No such file or directory\n")
				return 1
			}
			x.Stdout.Write(b)
		}
		return 0
	}
	if code := f.call(t, "PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/work/a.py", []byte("print(1)\n"), nil); code != http.StatusNoContent {
		t.Fatalf("put: %d", code)
	}
	var b []byte
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=/work/a.py", nil, &b); code != 200 || string(b) != "print(1)\n" {
		t.Errorf("get: %d %q", code, b)
	}
	var e map[string]string
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=/nope", nil, &e); code != 404 || !strings.Contains(e["error"], "No such file") {
		t.Errorf("missing file: %d %v", code, e)
	}
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=rel", nil, &e); code != 400 {
		t.Errorf("relative path: %d %v", code, e)
	}
	if code := f.call(t, "PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/big", bytes.Repeat([]byte("x"), 17), &e); code != 400 || !strings.Contains(e["error"], "larger than 16") {
		t.Errorf("file over the limit: %d %v", code, e)
	}
	if _, ok := files["/big"]; ok {
		t.Errorf("a file over the limit was written")
	}
	// A directory as a tar, unpacked and made in the sandbox.
	if code := f.call(t, "PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/proj&format=tar", []byte("TAR"), nil); code != http.StatusNoContent {
		t.Fatalf("put a tar: %d", code)
	}
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=/proj&format=tar", nil, &b); code != 200 || string(b) != "TAR" {
		t.Errorf("get a tar: %d %q", code, b)
	}
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=/none&format=tar", nil, &e); code != 404 || !strings.Contains(e["error"], "No such file") {
		t.Errorf("a tar of a missing directory: %d %v", code, e)
	}
	files["/huge"] = bytes.Repeat([]byte("y"), 17)
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=/huge", nil, &e); code != 400 {
		t.Errorf("reading a file over the limit: %d %v", code, e)
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Token: "s3cret"})
	for _, tc := range []struct {
		header string
		code   int
	}{{"", 401}, {"Bearer wrong", 401}, {"Bearer s3cret", 200}} {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/sandboxes", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("Authorization %q: %d, want %d", tc.header, resp.StatusCode, tc.code)
		}
	}
}

func TestCommandLimitAndAddress(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxCommands: 1, AllowNetwork: true})
	sb := f.create(t, CreateRequest{Network: "bridge"})
	if sb.IP != "10.87.0.9" {
		t.Errorf("a bridged sandbox's address: %q", sb.IP)
	}
	started, release := make(chan struct{}), make(chan struct{})
	f.run.exec = func(string, ExecArgs) int {
		close(started)
		<-release
		return 0
	}
	done := make(chan int)
	go func() {
		var res CommandResult
		done <- f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Cmd: "sleep 1"}, &res)
	}()
	<-started
	var e map[string]string
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Cmd: "true"}, &e); code != http.StatusTooManyRequests || !strings.Contains(e["error"], "1 commands running") {
		t.Errorf("a second command of 1: %d %v", code, e)
	}
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("the first command: %d", code)
	}
	f.run.exec = func(string, ExecArgs) int { return 0 }
	var res CommandResult
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Cmd: "true"}, &res); code != 200 {
		t.Errorf("a command after the first ended: %d", code)
	}
}

func TestBackground(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxOutput: 6})
	sb := f.create(t, CreateRequest{})
	release := make(chan struct{})
	var mu sync.Mutex
	var killed []string
	f.run.exec = func(_ string, x ExecArgs) int {
		switch {
		case x.Argv[0] == "/bin/sh" && strings.Contains(x.Argv[2], "/tmp/.lodge-cmd-"):
			if diff := cmp.Diff([]string{"sh", "server", "--port", "8000"}, x.Argv[3:]); diff != "" {
				t.Errorf("the wrapped command (-want +got):\n%s", diff)
			}
			io.WriteString(x.Stdout, "listening\n")
			io.WriteString(x.Stdout, "req 1\n")
			<-release
			return 137
		case x.Argv[0] == "cat":
			io.WriteString(x.Stdout, "42\n")
		case x.Argv[0] == "kill":
			mu.Lock()
			killed = x.Argv
			mu.Unlock()
			close(release)
		}
		return 0
	}
	var b Background
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Argv: []string{"server", "--port", "8000"}, Background: true}, &b); code != http.StatusAccepted || !b.Running || !strings.HasPrefix(b.ID, "cmd-") {
		t.Fatalf("start: %d %+v", code, b)
	}
	var got Background
	for deadline := time.Now().Add(5 * time.Second); !strings.HasSuffix(got.Stdout, "req 1\n") && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/commands/"+b.ID, nil, &got)
	}
	if got.Stdout != "req 1\n" || !got.Running {
		t.Errorf("a running background command: %+v, want its output's last 6 bytes", got)
	}
	var list []Background
	if f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/commands", nil, &list); len(list) != 1 || list[0].ID != b.ID || list[0].Stdout != "" {
		t.Errorf("list: %+v", list)
	}
	if code := f.call(t, "DELETE", "/v1/sandboxes/"+sb.ID+"/commands/"+b.ID, nil, nil); code != http.StatusNoContent {
		t.Errorf("kill: %d", code)
	}
	mu.Lock()
	if diff := cmp.Diff([]string{"kill", "-KILL", "42"}, killed); diff != "" {
		t.Errorf("kill (-want +got):\n%s", diff)
	}
	mu.Unlock()
	var e map[string]string
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/commands/"+b.ID, nil, &e); code != 404 {
		t.Errorf("a killed command still answers: %d %v", code, e)
	}
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Cmd: "x", Background: true, Stream: true}, &e); code != 400 {
		t.Errorf("background and stream: %d %v", code, e)
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	tl := tail{max: 10, c: &bgCommand{}}
	var all []byte
	for i, size := range []int{3, 9, 1, 25, 4, 10, 0, 7, 11, 2} {
		p := bytes.Repeat([]byte{byte('a' + i)}, size)
		if n, err := tl.Write(p); n != size || err != nil {
			t.Fatalf("write of %d: %d, %v", size, n, err)
		}
		all = append(all, p...)
		want := all[max(len(all)-10, 0):]
		if got := tl.last(); got != string(want) {
			t.Fatalf("after %d writes: %q, want %q", i+1, got, want)
		}
		if len(tl.buf) > 20 {
			t.Fatalf("holds %d bytes, more than twice its 10", len(tl.buf))
		}
	}
}

// A background command with stdin_open takes its first input, then what
// is sent, in order, and ends when its input is closed; one without it, or
// ended, takes none (409).
func TestBackgroundStdin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sb := f.create(t, CreateRequest{})
	f.run.exec = func(_ string, x ExecArgs) int {
		if x.Stdin == nil {
			return 0
		}
		sc := bufio.NewScanner(x.Stdin)
		for sc.Scan() {
			io.WriteString(x.Stdout, "got "+sc.Text()+"\n")
		}
		return 7
	}
	start := func(req CommandRequest) Background {
		t.Helper()
		req.Background = true
		var b Background
		if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", req, &b); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, b)
		}
		return b
	}
	first := "one\n"
	b := start(CommandRequest{Argv: []string{"repl"}, Stdin: &first, StdinOpen: true})
	if !b.StdinOpen {
		t.Errorf("started with stdin_open: %+v", b)
	}
	base := "/v1/sandboxes/" + sb.ID + "/commands/" + b.ID
	for _, in := range []string{"two\n", "thr", "ee\n"} {
		if code := f.call(t, "POST", base+"/stdin", []byte(in), nil); code != http.StatusNoContent {
			t.Fatalf("send %q: %d", in, code)
		}
	}
	if code := f.call(t, "DELETE", base+"/stdin", nil, nil); code != http.StatusNoContent {
		t.Fatalf("close stdin: %d", code)
	}
	var got Background
	for deadline := time.Now().Add(5 * time.Second); got.ExitCode == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.call(t, "GET", base, nil, &got)
	}
	if got.Stdout != "got one\ngot two\ngot three\n" || got.ExitCode == nil || *got.ExitCode != 7 || got.StdinOpen {
		t.Errorf("after its input closed: %+v", got)
	}
	var e struct{ Error string }
	if code := f.call(t, "POST", base+"/stdin", []byte("more\n"), &e); code != http.StatusConflict || !strings.Contains(e.Error, "takes no input") {
		t.Errorf("send to an ended command: %d %q", code, e.Error)
	}
	// Stdin without stdin_open: taken, then closed.
	only := "alone\n"
	b = start(CommandRequest{Argv: []string{"repl"}, Stdin: &only})
	base = "/v1/sandboxes/" + sb.ID + "/commands/" + b.ID
	got = Background{}
	for deadline := time.Now().Add(5 * time.Second); got.ExitCode == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.call(t, "GET", base, nil, &got)
	}
	if got.Stdout != "got alone\n" || got.ExitCode == nil {
		t.Errorf("stdin without stdin_open: %+v, want it read and closed", got)
	}
	b = start(CommandRequest{Argv: []string{"server"}})
	if code := f.call(t, "DELETE", "/v1/sandboxes/"+sb.ID+"/commands/"+b.ID+"/stdin", nil, &e); code != http.StatusConflict {
		t.Errorf("close the stdin of a command that has none: %d %q", code, e.Error)
	}
}

// Following a background command gives what is kept (with replay), its
// output as it comes and its end; one that ended gives its end at once.
func TestFollow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sb := f.create(t, CreateRequest{})
	step := make(chan string)
	f.run.exec = func(_ string, x ExecArgs) int {
		io.WriteString(x.Stdout, "kept\n")
		for out := range step {
			if out == "flood" { // many writes, then more than a reader may be behind
				for i := range 1000 {
					fmt.Fprintf(x.Stdout, "%d\n", i)
				}
				continue
			}
			if out == "big" {
				x.Stdout.Write(bytes.Repeat([]byte("x"), followBytes))
				continue
			}
			io.WriteString(x.Stderr, out)
		}
		return 3
	}
	var b Background
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Argv: []string{"job"}, Background: true}, &b); code != 202 {
		t.Fatalf("start: %d", code)
	}
	base := f.srv.URL + "/v1/sandboxes/" + sb.ID + "/commands/" + b.ID
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var got Background
		if f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/commands/"+b.ID, nil, &got); got.Stdout == "kept\n" || time.Now().After(deadline) {
			break
		}
	}
	follow := func(q string) (*bufio.Scanner, func()) {
		resp, err := http.Get(base + "/events" + q)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("follow%s: %v %v", q, resp, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 2*followBytes)
		return sc, func() { resp.Body.Close() }
	}
	next := func(sc *bufio.Scanner) string {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("the stream ended: %v", sc.Err())
		}
		return sc.Text()
	}
	replayed, closeR := follow("?replay=true")
	defer closeR()
	if got := next(replayed); got != `{"stdout":"kept\n"}` {
		t.Errorf("replay: %s", got)
	}
	step <- "err one\n"
	if got := next(replayed); got != `{"stderr":"err one\n"}` {
		t.Errorf("live: %s", got)
	}
	step <- "flood"
	for i := range 1000 {
		if got := next(replayed); got != fmt.Sprintf(`{"stdout":"%d\n"}`, i) {
			t.Fatalf("flood %d: %s", i, got)
		}
	}
	step <- "big"
	close(step)
	if got := next(replayed); len(got) < followBytes {
		t.Errorf("a large write: %d bytes", len(got))
	}
	if got := next(replayed); !strings.HasPrefix(got, `{"result":{"exit_code":3,`) {
		t.Errorf("end: %s", got)
	}
	if replayed.Scan() {
		t.Errorf("after the end: %s", replayed.Text())
	}
	ended, closeE := follow("")
	defer closeE()
	if got := next(ended); !strings.HasPrefix(got, `{"result":{"exit_code":3,`) {
		t.Errorf("an ended command: %s", got)
	}
	if code := f.call(t, "GET", "/v1/sandboxes/"+sb.ID+"/commands/cmd-nope/events", nil, nil); code != 404 {
		t.Errorf("no such command: %d", code)
	}
}

// A follower that falls more than followBytes behind is let go, and keeps
// nothing more; one that takes what comes is not.
func TestFollowerBehind(t *testing.T) {
	t.Parallel()
	f := &follower{more: make(chan struct{}, 1)}
	chunk := strings.Repeat("x", followBytes/4)
	for range 4 {
		f.put(Event{Stdout: chunk})
	}
	if evs, behind := f.take(); len(evs) != 4 || behind {
		t.Fatalf("at the limit: %d events, behind %v", len(evs), behind)
	}
	for range 5 {
		f.put(Event{Stderr: chunk})
	}
	if evs, behind := f.take(); len(evs) != 0 || !behind {
		t.Fatalf("past the limit: %d events kept, behind %v", len(evs), behind)
	}
	f.put(Event{Stdout: "later"})
	if evs, behind := f.take(); len(evs) != 0 || !behind {
		t.Errorf("after being let go: %d events kept", len(evs))
	}
}

// A background command on a terminal: its output and input go through
// the terminal, its size is the one asked and then the one set; its input
// is not closed; a command without one cannot be resized.
func TestBackgroundTerminal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sb := f.create(t, CreateRequest{})
	f.run.exec = func(_ string, x ExecArgs) int {
		if x.TTY == nil {
			time.Sleep(time.Second)
			return 0
		}
		sc := bufio.NewScanner(x.TTY)
		for sc.Scan() {
			switch strings.TrimSpace(sc.Text()) {
			case "size":
				ws, err := unix.IoctlGetWinsize(int(x.TTY.Fd()), unix.TIOCGWINSZ)
				if err != nil {
					t.Error(err)
					return 1
				}
				fmt.Fprintf(x.TTY, "size=%dx%d\n", ws.Col, ws.Row)
			case "exit":
				return 5
			}
		}
		return 0
	}
	var b Background
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", map[string]any{"argv": []string{"sh"}, "background": true,
		"pty": map[string]int{"cols": 80, "rows": 24}}, &b); code != 202 || b.PTY == nil || *b.PTY != (TermSize{80, 24}) {
		t.Fatalf("start on a terminal: %d %+v", code, b)
	}
	base := "/v1/sandboxes/" + sb.ID + "/commands/" + b.ID
	output := func(want string) {
		t.Helper()
		var got Background
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(got.Stdout, want) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			f.call(t, "GET", base, nil, &got)
		}
		if !strings.Contains(got.Stdout, want) {
			t.Fatalf("output %q, want %q in it", got.Stdout, want)
		}
	}
	f.call(t, "POST", base+"/stdin", []byte("size\n"), nil)
	output("size=80x24")
	if code := f.call(t, "POST", base+"/resize", TermSize{Cols: 132, Rows: 40}, nil); code != 204 {
		t.Fatalf("resize: %d", code)
	}
	f.call(t, "POST", base+"/stdin", []byte("size\n"), nil)
	output("size=132x40")
	var e struct{ Error string }
	if code := f.call(t, "DELETE", base+"/stdin", nil, &e); code != 409 || !strings.Contains(e.Error, "terminal") {
		t.Errorf("close a terminal's input: %d %q", code, e.Error)
	}
	if code := f.call(t, "POST", base+"/resize", TermSize{Cols: 0, Rows: 40}, &e); code != 400 {
		t.Errorf("resize to 0 columns: %d %q", code, e.Error)
	}
	f.call(t, "POST", base+"/stdin", []byte("exit\n"), nil)
	var got Background
	for deadline := time.Now().Add(5 * time.Second); got.ExitCode == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		f.call(t, "GET", base, nil, &got)
	}
	if got.ExitCode == nil || *got.ExitCode != 5 {
		t.Errorf("after exit: %+v", got)
	}
	if code := f.call(t, "POST", base+"/resize", TermSize{Cols: 80, Rows: 24}, &e); code != 409 {
		t.Errorf("resize after its end: %d %q", code, e.Error)
	}
	f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", CommandRequest{Argv: []string{"plain"}, Background: true}, &b)
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands/"+b.ID+"/resize", TermSize{Cols: 80, Rows: 24}, &e); code != 409 || !strings.Contains(e.Error, "no terminal") {
		t.Errorf("resize without a terminal: %d %q", code, e.Error)
	}
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/commands", map[string]any{"argv": []string{"x"}, "pty": map[string]int{"cols": 80, "rows": 24}}, &e); code != 400 {
		t.Errorf("a terminal for a command that is not in the background: %d %q", code, e.Error)
	}
}
