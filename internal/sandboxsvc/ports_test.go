package sandboxsvc

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// portBackend is a sandbox's server: it answers what it was asked, and
// echoes lines after an upgrade to "echo".
func portBackend(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			c, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			rw.Flush()
			line, _ := rw.ReadString('\n')
			rw.WriteString("echo " + line)
			rw.Flush()
			return
		}
		json.NewEncoder(w).Encode(map[string]string{
			"method": r.Method, "path": r.URL.EscapedPath(), "query": r.URL.RawQuery, "host": r.Host,
			"authorization": r.Header.Get("Authorization"), "token": r.Header.Get(TokenHeader),
			"prefix": r.Header.Get("X-Forwarded-Prefix"), "for": r.Header.Get("X-Forwarded-For"),
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPorts(t *testing.T) {
	t.Parallel()
	const tok = "0123456789abcdef-token"
	f := newFixture(t, Config{Token: tok})
	backend := portBackend(t)
	var dialed []string
	f.run.dial = func(name string, port uint16) (net.Conn, error) {
		f.run.mu.Lock()
		dialed = append(dialed, fmt.Sprintf("%s:%d", name, port))
		f.run.mu.Unlock()
		if port != 8080 {
			return nil, &portError{msg: fmt.Sprintf("port %d of sandbox %s: connect to 127.0.0.1:%d: connection refused", port, name, port)}
		}
		return net.Dial("tcp", backend.Listener.Addr().String())
	}
	send := func(method, path string, hdr map[string]string) (int, map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(method, f.srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]string
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	var sb Sandbox
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/sandboxes", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&sb)
	resp.Body.Close()
	prefix := "/v1/sandboxes/" + sb.ID + "/ports/8080"

	code, got := send("POST", prefix+"/a%2Fb/c?x=1&y=2", bearer)
	want := map[string]string{"method": "POST", "path": "/a%2Fb/c", "query": "x=1&y=2", "host": "localhost:8080",
		"authorization": "", "token": "", "prefix": prefix, "for": "127.0.0.1"}
	if code != 200 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("through the service's token: %d %v, want 200 %v (the token must not reach the sandbox)", code, got, want)
	}
	// The token in X-Lodge-Token: the request's own Authorization goes on.
	code, got = send("GET", prefix+"/", map[string]string{TokenHeader: tok, "Authorization": "Basic YXBwOmFwcA=="})
	if code != 200 || got["authorization"] != "Basic YXBwOmFwcA==" || got["token"] != "" || got["path"] != "/" {
		t.Errorf("with %s: %d %v, want the app's Authorization and no token", TokenHeader, code, got)
	}
	for name, c := range map[string]struct {
		path string
		hdr  map[string]string
		code int
		says string
	}{
		"no token":         {prefix + "/", nil, 401, "token"},
		"wrong token":      {prefix + "/", map[string]string{TokenHeader: "0123456789abcdef-wrong"}, 401, "token"},
		"no such sandbox":  {"/v1/sandboxes/sbx-0000000000000000/ports/8080/", bearer, 404, "no such sandbox"},
		"port zero":        {"/v1/sandboxes/" + sb.ID + "/ports/0/", bearer, 400, "1-65535"},
		"port too big":     {"/v1/sandboxes/" + sb.ID + "/ports/65536/", bearer, 400, "1-65535"},
		"port not decimal": {"/v1/sandboxes/" + sb.ID + "/ports/08080/", bearer, 400, "1-65535"},
		"nothing listens":  {"/v1/sandboxes/" + sb.ID + "/ports/9090/x", bearer, 502, "connection refused"},
	} {
		code, got := send("GET", c.path, c.hdr)
		if code != c.code || !strings.Contains(got["error"], c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", name, code, got["error"], c.code, c.says)
		}
	}

	// An upgrade (as WebSocket's) becomes a connection both ways.
	c, err := net.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s/ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", prefix, tok)
	br := bufio.NewReader(c)
	up, err := http.ReadResponse(br, nil)
	if err != nil || up.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", up, err)
	}
	fmt.Fprintf(c, "hello\n")
	if line, err := br.ReadString('\n'); line != "echo hello\n" {
		t.Errorf("after the upgrade: %q %v, want the sandbox's echo", line, err)
	}
	for _, d := range dialed {
		if !strings.HasPrefix(d, sb.ID+":") {
			t.Errorf("dialed %s: only sandbox %s was asked for", d, sb.ID)
		}
	}
}

// TestPortConnsBounded: a sandbox has at most maxPortConns connections to
// its ports at once; one closed frees its place.
func TestPortConnsBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.run.dial = func(string, uint16) (net.Conn, error) {
		a, b := net.Pipe()
		go io.Copy(io.Discard, b)
		return a, nil
	}
	sb := f.create(t, CreateRequest{})
	other := f.create(t, CreateRequest{})
	var conns []net.Conn
	for range maxPortConns {
		c, err := f.svc.DialPort(t.Context(), sb.ID, 80)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	if _, err := f.svc.DialPort(t.Context(), sb.ID, 81); !errors.Is(err, errLimit) {
		t.Fatalf("connection %d: %v, want the limit", maxPortConns+1, err)
	}
	if c, err := f.svc.DialPort(t.Context(), other.ID, 80); err != nil {
		t.Fatalf("another sandbox's connection: %v", err)
	} else {
		c.Close()
	}
	conns[0].Close()
	conns[0].Close() // twice: one place only
	c, err := f.svc.DialPort(t.Context(), sb.ID, 80)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	if _, err := f.svc.DialPort(t.Context(), sb.ID, 80); !errors.Is(err, errLimit) {
		t.Fatalf("a closed connection freed more than its place: %v", err)
	}
	for _, c := range append(conns[1:], c) {
		c.Close()
	}
	f.svc.mu.Lock()
	defer f.svc.mu.Unlock()
	if len(f.svc.portConns) != 0 {
		t.Errorf("counts left: %v", f.svc.portConns)
	}
}
