package sandboxsvc

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzAPI sends bodies to the API's requests: whatever a caller sends gets
// a reply of a known status, an error as JSON, and no panic.
func FuzzAPI(f *testing.F) {
	run := &fakeRunner{ctrs: map[string]string{}, owners: map[string]string{}, exec: func(_ string, x ExecArgs) int {
		io.WriteString(x.Stdout, "out")
		return 0
	}}
	svc, err := New(Config{Dir: f.TempDir(), MaxSandboxes: 4}, run, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	h := svc.Handler()
	sb, err := svc.Create(f.Context(), CreateRequest{})
	if err != nil {
		f.Fatal(err)
	}
	routes := []struct{ method, path string }{
		{"POST", "/v1/sandboxes"},
		{"POST", "/v1/sandboxes/" + sb.ID + "/commands"},
		{"POST", "/v1/sandboxes/" + sb.ID + "/timeout"},
		{"PUT", "/v1/sandboxes/" + sb.ID + "/files?path=/a"},
		{"GET", "/v1/sandboxes/" + sb.ID + "/files?path="},
	}
	f.Add(uint8(0), []byte(`{"image":"busybox","env":{"A":"1"},"timeout_seconds":5}`))
	f.Add(uint8(1), []byte(`{"cmd":"echo hi","stream":true}`))
	f.Add(uint8(1), []byte(`{"argv":["sleep","1"],"background":true}`))
	f.Add(uint8(2), []byte(`{"timeout_seconds":-1}`))
	f.Add(uint8(3), []byte("\x00\xff"))
	f.Add(uint8(4), []byte("/etc/../passwd"))
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := routes[int(route)%len(routes)]
		path := rt.path
		if rt.method == "GET" {
			path += string(body) // the file's path is the input here
			body = nil
		}
		req, err := http.NewRequest(rt.method, "http://x"+path, bytes.NewReader(body))
		if err != nil {
			return // not a URL a client can send
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 200, 201, 202, 204:
		case 400, 404, 429:
			var e map[string]string
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e["error"] == "" {
				t.Errorf("%s %s: %d without an error object: %q", rt.method, path, w.Code, w.Body.String())
			}
		default:
			t.Errorf("%s %s %q: status %d: %s", rt.method, path, body, w.Code, w.Body.String())
		}
		// Sandboxes the fuzzer made are not kept, so that it keeps making them.
		svc.mu.Lock()
		var made []string
		for id := range svc.boxes {
			if id != sb.ID {
				made = append(made, id)
			}
		}
		svc.mu.Unlock()
		for _, id := range made {
			svc.Remove(t.Context(), id)
		}
	})
}

// FuzzParseStat reads what a sandbox's stat printed (a hostile guest's
// bytes): no panic, and every entry has a type of the four.
func FuzzParseStat(f *testing.F) {
	f.Add([]byte("regular file|12|644|1700000000|./a.txt\ndirectory|4096|755|1|./d\n"))
	f.Add([]byte("|||||\n\n|1|8|x|\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		for _, fi := range parseStat(out, "/w") {
			switch fi.Type {
			case "file", "dir", "symlink", "other":
			default:
				t.Fatalf("type %q", fi.Type)
			}
		}
	})
}
