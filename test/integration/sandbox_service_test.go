package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/testdns"
)

// sandboxAPI is a client of `lodge sandbox serve` on a unix socket.
type sandboxAPI struct {
	t     *testing.T
	c     *http.Client
	token string // sent as a bearer token, if set
}

func newSandboxAPI(t *testing.T, sock string) *sandboxAPI {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	return &sandboxAPI{t: t, c: &http.Client{Transport: tr, Timeout: 3 * time.Minute}}
}

// call sends body (JSON, or raw bytes) and decodes the reply into out,
// or reads it whole into a *[]byte.
func (a *sandboxAPI) call(method, path string, body, out any) int {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, "http://lodge"+path, rd)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if raw, ok := out.(*[]byte); ok {
		*raw = b
	} else if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type apiResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	TimedOut bool   `json:"timed_out"`
	Error    string `json:"error"`
}

func (a *sandboxAPI) command(id string, req map[string]any) apiResult {
	a.t.Helper()
	var r apiResult
	if code := a.call("POST", "/v1/sandboxes/"+id+"/commands", req, &r); code != 200 {
		a.t.Fatalf("command %v in %s: %d %+v", req, id, code, r)
	}
	return r
}

// sandbox is a sandbox as the API shows it.
type sandbox struct {
	ID, Image, State, Error, IP string
	ExpiresAt                   time.Time `json:"expires_at"`
}

// serveSandboxes starts `lodge sandbox serve` and returns its socket and
// a function that stops it (SIGTERM) and waits.
func serveSandboxes(l *lodgeCLI, ref string, extra ...string) (string, func()) {
	t := l.t
	sock := filepath.Join(l.dir, "sandbox.sock")
	cmd := exec.Command(l.bin, append([]string{"sandbox", "serve", "--listen", "unix://" + sock, "--dir", filepath.Join(l.dir, "sandboxes"),
		"--image", ref, "--default-image", ref, "--max-sandboxes", "2", "--allow-network"}, extra...)...)
	cmd.Env = l.env
	var logb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("service log:\n%s", logb.String())
		}
		// The network the service made (--allow-network) goes once
		// its sandboxes have.
		for _, id := range strings.Fields(l.run("", "ps", "-a", "-q").stdout) {
			l.run("", "rm", "-f", id)
		}
		l.run("", "network", "rm", "lodge-sandboxes")
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service never listened:\n%s", logb.String())
		}
	}
	return sock, stop
}

func TestSandboxService(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	// Beyond the host, a server a sandbox reaches by an allowed name (the
	// egress proxy resolves it with a DNS server of the test's).
	hostAddr, outAddr, _ := beyondHost(t)
	dns := testdns.Serve(t, map[string]string{"allowed.test": outAddr, "other.test": hostAddr})
	sock, stop := serveSandboxes(l, ref, "--egress-resolver", dns)
	api := newSandboxAPI(t, sock)

	var a sandbox
	if code := api.call("POST", "/v1/sandboxes", map[string]any{"timeout_seconds": 600, "env": map[string]string{"GREETING": "hello"},
		"metadata": map[string]string{"tenant": "t1"}}, &a); code != 201 {
		t.Fatalf("create: %d %+v", code, a)
	}
	r := api.command(a.ID, map[string]any{"cmd": `echo "$GREETING $((6*7))"; uname -r; cat /marker; echo err >&2; exit 3`})
	if r.ExitCode != 3 || !strings.HasPrefix(r.Stdout, "hello 42\n") || strings.Contains(r.Stdout, hostKernel(t)) ||
		!strings.Contains(r.Stdout, "from the second layer") || r.Stderr != "err\n" {
		t.Errorf("command: %+v (host kernel %s)", r, hostKernel(t))
	}
	if r := api.command(a.ID, map[string]any{"argv": []string{"cat"}, "stdin": "from stdin"}); r.Stdout != "from stdin" {
		t.Errorf("stdin: %+v", r)
	}

	// Files: written, read back, seen by commands.
	src := []byte("print('hi')\n\x00\xff binary too\n")
	if code := api.call("PUT", "/v1/sandboxes/"+a.ID+"/files?path=/work/dir/main.py", src, nil); code != 204 {
		t.Fatalf("write file: %d", code)
	}
	var got []byte
	if code := api.call("GET", "/v1/sandboxes/"+a.ID+"/files?path=/work/dir/main.py", nil, &got); code != 200 || !bytes.Equal(got, src) {
		t.Errorf("read file: %d %q, want %q", code, got, src)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "wc -c < main.py", "cwd": "/work/dir"}); strings.TrimSpace(r.Stdout) != "26" {
		t.Errorf("the file in a command: %+v", r)
	}

	// A directory goes in and comes out as a tar, unpacked and made in the
	// sandbox.
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for name, body := range map[string]string{"a.txt": "alpha\n", "sub/b.txt": "beta\n"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	if code := api.call("PUT", "/v1/sandboxes/"+a.ID+"/files?path=/work/proj&format=tar", tb.Bytes(), nil); code != 204 {
		t.Fatalf("write a tar: %d", code)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "cat /work/proj/a.txt /work/proj/sub/b.txt"}); r.Stdout != "alpha\nbeta\n" {
		t.Errorf("the unpacked tar: %+v", r)
	}
	var out []byte
	if code := api.call("GET", "/v1/sandboxes/"+a.ID+"/files?path=/work/proj&format=tar", nil, &out); code != 200 {
		t.Fatalf("read a tar: %d %q", code, out)
	}
	inTar := map[string]string{}
	for tr := tar.NewReader(bytes.NewReader(out)); ; {
		h, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeReg {
			inTar[path.Clean(h.Name)] = string(b)
		}
	}
	if inTar["a.txt"] != "alpha\n" || inTar["sub/b.txt"] != "beta\n" {
		t.Errorf("the directory read as a tar: %v", inTar)
	}
	// A directory's entries, a file's details, a move, a new directory
	// and a removal, as the sandbox's own programs see them.
	files := "/v1/sandboxes/" + a.ID + "/files"
	type entry struct {
		Name, Path, Type, Mode string
		Size                   int64
		ModifiedAt             time.Time `json:"modified_at"`
	}
	api.command(a.ID, map[string]any{"cmd": "ln -s a.txt /work/proj/link; touch '/work/proj/sp ace'"})
	var entries []entry
	if code := api.call("GET", files+"?path=/work/proj&format=list", nil, &entries); code != 200 || len(entries) != 4 {
		t.Fatalf("list: %d %+v", code, entries)
	}
	byName := map[string]entry{}
	for _, e := range entries {
		byName[e.Name] = e
	}
	if e := byName["a.txt"]; e.Type != "file" || e.Size != 6 || e.Mode != "644" || e.Path != "/work/proj/a.txt" || time.Since(byName["sp ace"].ModifiedAt) > time.Hour {
		t.Errorf("list's a.txt: %+v", e)
	}
	if byName["sub"].Type != "dir" || byName["link"].Type != "symlink" || byName["sp ace"].Type != "file" {
		t.Errorf("list's types: %+v", entries)
	}
	var one entry
	if code := api.call("GET", files+"?path=/work/proj/sub/b.txt&format=stat", nil, &one); code != 200 || one.Name != "b.txt" || one.Size != 5 {
		t.Errorf("stat: %d %+v", code, one)
	}
	if code := api.call("POST", files+"/move", map[string]string{"from": "/work/proj/a.txt", "to": "/work/moved/a.txt"}, nil); code != 204 {
		t.Errorf("move: %d", code)
	}
	if code := api.call("PUT", files+"?path=/work/empty/dir&format=dir", nil, nil); code != 204 {
		t.Errorf("mkdir: %d", code)
	}
	if code := api.call("DELETE", files+"?path=/work/proj/sub", nil, nil); code != 204 {
		t.Errorf("remove: %d", code)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "cat /work/moved/a.txt; test -d /work/empty/dir && echo dir; test -e /work/proj/sub || echo gone"}); r.Stdout != "alpha\ndir\ngone\n" {
		t.Errorf("after move, mkdir and remove: %+v", r)
	}
	var missing struct{ Error string }
	if code := api.call("DELETE", files+"?path=/work/proj/sub", nil, &missing); code != 404 || !strings.Contains(missing.Error, "No such file") {
		t.Errorf("remove of what is gone: %d %+v", code, missing)
	}
	if code := api.call("GET", files+"?path=/work/none&format=list", nil, &missing); code != 404 {
		t.Errorf("list of a missing directory: %d %+v", code, missing)
	}

	// A command past its timeout is killed in the guest.
	if r := api.command(a.ID, map[string]any{"argv": []string{"sleep", "60"}, "timeout_seconds": 2}); !r.TimedOut || r.ExitCode != 137 {
		t.Errorf("command past its timeout: %+v, want timed_out and exit 137", r)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "ps -o args | grep -c '^sleep 6[0]'"}); strings.TrimSpace(r.Stdout) != "0" {
		t.Errorf("the timed-out command still runs: %+v", r)
	}

	// Streamed output comes as events, then the result.
	j, _ := json.Marshal(map[string]any{"cmd": "echo one; echo two >&2", "stream": true})
	resp, err := api.c.Post("http://lodge/v1/sandboxes/"+a.ID+"/commands", "application/json", bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	var stream []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		stream = append(stream, sc.Text())
	}
	resp.Body.Close()
	if joined := strings.Join(stream, "\n"); !strings.Contains(joined, `{"stdout":"one\n"}`) || !strings.Contains(joined, `{"stderr":"two\n"}`) ||
		!strings.HasPrefix(stream[len(stream)-1], `{"result":{"exit_code":0,`) {
		t.Errorf("stream:\n%s", joined)
	}

	// A background command runs on; its output is asked after; it is killed.
	var bg struct {
		ID      string `json:"command_id"`
		Running bool
		Stdout  string
	}
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"background": true,
		"argv": []string{"sh", "-c", "echo serving; while :; do sleep 1; done"}}, &bg); code != 202 || !bg.Running {
		t.Fatalf("background command: %d %+v", code, bg)
	}
	l.eventually("the background command's output", func() bool {
		api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+bg.ID, nil, &bg)
		return bg.Stdout == "serving\n"
	})
	if r := api.command(a.ID, map[string]any{"cmd": "ps -o args | grep -c '^sh -c echo servin[g]'"}); strings.TrimSpace(r.Stdout) != "1" || !bg.Running {
		t.Errorf("the background command is not running: %+v %+v", r, bg)
	}
	if code := api.call("DELETE", "/v1/sandboxes/"+a.ID+"/commands/"+bg.ID, nil, nil); code != 204 {
		t.Errorf("kill the background command: %d", code)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "ps -o args | grep -c '^sh -c echo servin[g]'"}); strings.TrimSpace(r.Stdout) != "0" {
		t.Errorf("the killed background command still runs: %+v", r)
	}

	// A server in the sandbox, which has no network, is reached through
	// the service; a port nothing listens on is a 502 that says so.
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"background": true,
		"cmd": "mkdir -p /www/sub && echo served > /www/sub/page.html && exec httpd -f -p 8080 -h /www"}, &bg); code != 202 {
		t.Fatalf("server in the background: %d %+v", code, bg)
	}
	var page []byte
	l.eventually("the sandbox's server through its port", func() bool {
		return api.call("GET", "/v1/sandboxes/"+a.ID+"/ports/8080/sub/page.html", nil, &page) == 200 && string(page) == "served\n"
	})
	// A background command that reads its input: sent while it runs,
	// ended by closing it.
	var repl struct {
		ID       string `json:"command_id"`
		Stdout   string
		ExitCode *int `json:"exit_code"`
	}
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"background": true, "stdin_open": true,
		"cmd": `while read -r l; do echo "got $l"; done; echo bye`}, &repl); code != 202 {
		t.Fatalf("a reading command: %d %+v", code, repl)
	}
	for _, in := range []string{"one\n", "two\n"} {
		if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands/"+repl.ID+"/stdin", []byte(in), nil); code != 204 {
			t.Errorf("send %q: %d", in, code)
		}
	}
	l.eventually("the reading command's answers", func() bool {
		api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+repl.ID, nil, &repl)
		return repl.Stdout == "got one\ngot two\n"
	})
	// Followed as it runs: what is kept, what comes, its end.
	followed := make(chan string, 1)
	go func() {
		var b []byte
		api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+repl.ID+"/events?replay=true", nil, &b)
		followed <- string(b)
	}()
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands/"+repl.ID+"/stdin", []byte("three\n"), nil); code != 204 {
		t.Errorf("send three: %d", code)
	}
	if code := api.call("DELETE", "/v1/sandboxes/"+a.ID+"/commands/"+repl.ID+"/stdin", nil, nil); code != 204 {
		t.Errorf("close its stdin: %d", code)
	}
	select {
	case got := <-followed:
		if !strings.HasPrefix(got, `{"stdout":"got one\ngot two\n`) || !strings.Contains(got, "got three") ||
			!strings.Contains(got, `{"result":{"exit_code":0,`) {
			t.Errorf("followed:\n%s", got)
		}
	case <-time.After(time.Minute):
		t.Errorf("following the command: no end a minute after its input ended")
	}
	l.eventually("the reading command's end", func() bool {
		api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+repl.ID, nil, &repl)
		return repl.ExitCode != nil
	})
	if *repl.ExitCode != 0 || repl.Stdout != "got one\ngot two\ngot three\nbye\n" {
		t.Errorf("after its input ended: exit %d, %q", *repl.ExitCode, repl.Stdout)
	}
	// A shell on a terminal: its size is the one asked, then the one set;
	// it reads what is sent as a terminal's input.
	var term struct {
		ID       string `json:"command_id"`
		Stdout   string
		ExitCode *int `json:"exit_code"`
	}
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"background": true, "argv": []string{"sh"},
		"pty": map[string]int{"cols": 80, "rows": 24}}, &term); code != 202 {
		t.Fatalf("a shell on a terminal: %d %+v", code, term)
	}
	termOut := func(want string) {
		t.Helper()
		l.eventually("the terminal's "+want, func() bool {
			api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID, nil, &term)
			return strings.Contains(term.Stdout, want)
		})
	}
	api.call("POST", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID+"/stdin", []byte("stty size; tty | sed s/^/on:/\n"), nil)
	termOut("24 80")
	termOut("on:/dev/pts/")
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID+"/resize", map[string]int{"cols": 132, "rows": 40}, nil); code != 204 {
		t.Errorf("resize: %d", code)
	}
	l.eventually("the terminal's new size", func() bool {
		api.call("POST", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID+"/stdin", []byte("stty size\n"), nil)
		time.Sleep(500 * time.Millisecond)
		api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID, nil, &term)
		return strings.Contains(term.Stdout, "40 132")
	})
	api.call("POST", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID+"/stdin", []byte("exit 6\n"), nil)
	l.eventually("the shell's end", func() bool {
		api.call("GET", "/v1/sandboxes/"+a.ID+"/commands/"+term.ID, nil, &term)
		return term.ExitCode != nil
	})
	if *term.ExitCode != 6 {
		t.Errorf("the shell on a terminal ended with %d, want 6", *term.ExitCode)
	}
	var perr struct{ Error string }
	if code := api.call("GET", "/v1/sandboxes/"+a.ID+"/ports/8081/", nil, &perr); code != 502 || !strings.Contains(perr.Error, "connection refused") {
		t.Errorf("a port nothing listens on: %d %q, want 502 saying the connection was refused", code, perr.Error)
	}

	// A second sandbox, on the service's network (whose sandboxes do not
	// reach each other), sees nothing of the first; what its deny_out
	// names it cannot reach, not even the host; a third is over the
	// limit.
	var b sandbox
	if code := api.call("POST", "/v1/sandboxes", map[string]any{"network": "bridge", "deny_out": []string{"0.0.0.0/0"}}, &b); code != 201 {
		t.Fatalf("create second: %d %+v", code, b)
	}
	if r := api.command(b.ID, map[string]any{"cmd": "ip -4 addr"}); b.IP == "" || !strings.Contains(r.Stdout, "inet "+b.IP+"/") {
		t.Errorf("the bridged sandbox's address %q; in it:\n%s", b.IP, r.Stdout)
	}
	if got := l.must("network", "inspect", "-f", `{{index .Options "com.docker.network.bridge.enable_icc"}} {{len .Containers}}`, "lodge-sandboxes"); got != "false 1\n" {
		t.Errorf("the service's network: enable_icc and members %q, want false 1", got)
	}
	if r := api.command(b.ID, map[string]any{"cmd": gwScript + "ping -c 1 -W 3 $gw >/dev/null || echo denied"}); r.Stdout != "denied\n" {
		t.Errorf(`deny_out ["0.0.0.0/0"]: the host answers the sandbox: %+v`, r)
	}
	if code := api.call("PUT", "/v1/sandboxes/"+b.ID+"/network", map[string]any{"deny_out": []string{}}, nil); code != 200 {
		t.Errorf("PUT network: %d", code)
	}
	if r := api.command(b.ID, map[string]any{"cmd": gwScript + "ping -c 1 -W 3 $gw >/dev/null && echo host"}); r.Stdout != "host\n" {
		t.Errorf(`deny_out [] put while it runs: the host does not answer: %+v`, r)
	}
	// Names: only the allowed one, and only where it resolves for the
	// host (the sandbox asks for it at an address of the test's link
	// that nothing holds); other ports stay denied.
	if code := api.call("PUT", "/v1/sandboxes/"+b.ID+"/network", map[string]any{"allow_out": []string{"allowed.test"}, "deny_out": []string{"0.0.0.0/0"}}, nil); code != 200 {
		t.Errorf("PUT network with a name: %d", code)
	}
	elsewhere := outAddr[:strings.LastIndex(outAddr, ".")] + ".3"
	names := "wget -qO- --header 'Host: allowed.test' http://" + elsewhere + "/; wget -qO- --header 'Host: denied.test' http://" + outAddr + "/ || echo refused; " +
		"wget -qO- http://" + outAddr + ":8080/ || echo denied"
	if r := api.command(b.ID, map[string]any{"cmd": names}); r.Stdout != hostAddr+"\nrefused\ndenied\n" {
		t.Errorf("allow_out [allowed.test], deny_out [0.0.0.0/0]: %+v; want the allowed name's server (seeing the host), the other refused, port 8080 denied", r)
	}
	// On another port, by the allowed name: its DNS goes to the service's
	// resolver, which lets the name's address through for the
	// connection that follows (nothing listens there: refused by the
	// server's side, not denied by the host's "no route").
	if r := api.command(b.ID, map[string]any{"cmd": "wget -qO- http://allowed.test:8089/ 2>&1; true"}); !strings.Contains(r.Stdout, "refused") {
		t.Errorf("allowed.test on port 8089: %+v; want its connection refused by the server's side, not denied", r)
	}
	// A name not allowed resolves, and its address stays denied (the
	// host's, which would refuse as the server did).
	if r := api.command(b.ID, map[string]any{"cmd": "wget -qO- http://other.test:8089/ 2>&1; true"}); !strings.Contains(r.Stdout, "No route to host") {
		t.Errorf("other.test on port 8089: %+v; want it denied", r)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "ip -4 addr | grep -v 127.0.0.1 | grep -c inet"}); strings.TrimSpace(r.Stdout) != "0" {
		t.Errorf("the sandbox without a network has an address: %+v", r)
	}
	var e sandbox
	if code := api.call("GET", "/v1/sandboxes/"+b.ID+"/files?path=/work/dir/main.py", nil, &e); code != 404 || !strings.Contains(e.Error, "No such file") {
		t.Errorf("the first sandbox's file read in the second: %d %+v", code, e)
	}
	if code := api.call("POST", "/v1/sandboxes", map[string]any{}, &e); code != 429 {
		t.Errorf("third sandbox of 2: %d %+v", code, e)
	}
	if code := api.call("POST", "/v1/sandboxes", map[string]any{"image": "alpine"}, &e); code != 400 {
		t.Errorf("an image the service does not offer: %d %+v", code, e)
	}

	// The second, removed: container, VM and record go.
	bID := l.inspect(b.ID).ID
	if code := api.call("DELETE", "/v1/sandboxes/"+b.ID, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
	if code := api.call("GET", "/v1/sandboxes/"+b.ID, nil, nil); code != 404 || strings.Contains(l.must("ps", "-a"), b.ID) {
		t.Errorf("after delete: the sandbox answers %d; lodge ps -a:\n%s", code, l.must("ps", "-a"))
	}
	if ps := processesMentioning(bID); len(ps) != 0 {
		t.Errorf("processes left by the removed sandbox: %v", ps)
	}

	// A snapshot of the first keeps its files; a sandbox made from it has
	// them (past the --image list), and its own writes stay its own.
	var snap struct{ Name, Image, From string }
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/snapshots", map[string]any{"name": "with-main"}, &snap); code != 201 || snap.From != a.ID {
		t.Fatalf("snapshot: %d %+v", code, snap)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "echo still running"}); r.Stdout != "still running\n" {
		t.Errorf("the sandbox after its snapshot: %+v", r)
	}
	var c sandbox
	if code := api.call("POST", "/v1/sandboxes", map[string]any{"snapshot": "with-main"}, &c); code != 201 || c.Image != snap.Image {
		t.Fatalf("create from the snapshot: %d %+v", code, c)
	}
	if r := api.command(c.ID, map[string]any{"cmd": "head -1 /work/dir/main.py; cat /marker; echo mine > /work/only-c"}); r.Stdout != "print('hi')\nfrom the second layer\n" {
		t.Errorf("in the sandbox from the snapshot: %+v", r)
	}
	if r := api.command(a.ID, map[string]any{"cmd": "test -e /work/only-c || echo absent"}); r.Stdout != "absent\n" {
		t.Errorf("the snapshot's sandbox's write reached the first: %+v", r)
	}
	if code := api.call("DELETE", "/v1/snapshots/with-main", nil, &e); code != 409 {
		t.Errorf("removing a snapshot in use: %d %+v", code, e)
	}
	if code := api.call("DELETE", "/v1/sandboxes/"+c.ID, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
	if code := api.call("DELETE", "/v1/snapshots/with-main", nil, nil); code != 204 || strings.Contains(l.must("images"), "with-main") {
		t.Errorf("removing the snapshot: %d; images:\n%s", code, l.must("images"))
	}

	// Sandboxes outlive the service: a new one takes them up.
	stop()
	sock, stop = serveSandboxes(l, ref, "--egress-resolver", dns)
	api = newSandboxAPI(t, sock)
	var list []sandbox
	api.call("GET", "/v1/sandboxes", nil, &list)
	if len(list) != 1 || list[0].ID != a.ID || list[0].State != "running" || !list[0].ExpiresAt.Equal(a.ExpiresAt) {
		t.Errorf("after the service restarted: %+v, want %s running until %v", list, a.ID, a.ExpiresAt)
	}
	if r := api.command(a.ID, map[string]any{"argv": []string{"head", "-1", "/work/dir/main.py"}}); r.Stdout != "print('hi')\n" {
		t.Errorf("after the service restarted: %+v", r)
	}

	// Its deadline holds with no service running: its container's
	// monitor ends it.
	aID := l.inspect(a.ID).ID
	if code := api.call("POST", "/v1/sandboxes/"+a.ID+"/timeout", map[string]any{"timeout_seconds": 3}, &a); code != 200 {
		t.Fatalf("timeout: %d", code)
	}
	stop()
	l.eventually("the sandbox ended at its deadline, with no service", func() bool {
		return strings.TrimSpace(l.must("ps", "-a", "-q")) == ""
	})
	if ps := processesMentioning(aID); len(ps) != 0 {
		t.Errorf("processes left by the expired sandbox: %v", ps)
	}
}

// TestSandboxTenants: a service shared by two tenants (--tenants-file):
// each reaches only its own sandboxes, through the real service and a
// real sandbox; a request without a token is refused even on the socket.
func TestSandboxTenants(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	file := filepath.Join(l.dir, "tenants")
	os.WriteFile(file, []byte("alice alice-token-0123456789 1\nbob bob-token-0123456789\n"), 0o600)
	sock, _ := serveSandboxes(l, ref, "--tenants-file", file)
	alice, bob, anon := newSandboxAPI(t, sock), newSandboxAPI(t, sock), newSandboxAPI(t, sock)
	alice.token, bob.token = "alice-token-0123456789", "bob-token-0123456789"
	var a sandbox
	if code := alice.call("POST", "/v1/sandboxes", map[string]any{}, &a); code != 201 {
		t.Fatalf("alice's sandbox: %d", code)
	}
	if r := alice.command(a.ID, map[string]any{"cmd": "echo mine > /tmp/f; cat /tmp/f"}); r.Stdout != "mine\n" {
		t.Errorf("alice's command: %+v", r)
	}
	if code := alice.call("POST", "/v1/sandboxes", map[string]any{}, nil); code != 429 {
		t.Errorf("alice past her limit of one: %d", code)
	}
	var e map[string]string
	if code := bob.call("POST", "/v1/sandboxes/"+a.ID+"/commands", map[string]any{"cmd": "cat /tmp/f"}, &e); code != 404 {
		t.Errorf("bob's command in alice's sandbox: %d %v", code, e)
	}
	if code := bob.call("DELETE", "/v1/sandboxes/"+a.ID, nil, nil); code != 404 {
		t.Errorf("bob's delete of alice's sandbox: %d", code)
	}
	var list []sandbox
	bob.call("GET", "/v1/sandboxes", nil, &list)
	if len(list) != 0 {
		t.Errorf("bob sees: %+v", list)
	}
	if code := anon.call("GET", "/v1/sandboxes", nil, nil); code != 401 {
		t.Errorf("no token on the socket: %d", code)
	}
	if code := alice.call("DELETE", "/v1/sandboxes/"+a.ID, nil, nil); code != 204 {
		t.Errorf("alice's delete: %d", code)
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Errorf("left: %s", ps)
	}
}
