package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// watchLine is one line of lodge watch --format json, or of the sandbox
// service's watch.
type watchLine struct {
	Type, Name, Path string
	Dir              bool
	Time             time.Time
}

// watchEvents reads a watch's lines as "TYPE PATH", closed at its end.
func watchEvents(sc *bufio.Scanner) <-chan string {
	got := make(chan string, 1024)
	go func() {
		defer close(got)
		for sc.Scan() {
			var e watchLine
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Time.IsZero() {
				got <- "bad line " + sc.Text()
				return
			}
			got <- e.Type + " " + e.Path
		}
	}()
	return got
}

// nextEvents reads events until each of want ("TYPE PATH") came, in
// order (others may come between), or the stream ends or stalls.
func nextEvents(t *testing.T, what string, got <-chan string, want ...string) {
	t.Helper()
	var seen []string
	timeout := time.After(60 * time.Second)
	for len(want) > 0 {
		select {
		case e, ok := <-got:
			if !ok {
				t.Fatalf("%s: the stream ended after %q, still waiting for %q", what, seen, want)
			}
			seen = append(seen, e)
			if e == want[0] {
				want = want[1:]
			}
		case <-timeout:
			t.Fatalf("%s: got %q, still waiting for %q", what, seen, want)
		}
	}
}

// TestLodgeWatch: lodge watch reports what the container's programs
// change below a directory, in its root and in a volume, in directories
// made after it began (-r); it ends when the directory goes, and with
// the container; a path that is no directory is refused. The sandbox
// service's watch streams the same.
func TestLodgeWatch(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	vol := t.TempDir()
	l.must("run", "-d", "--name", "wt", "-v", vol+":/data", ref, "sleep", "600")
	defer l.run("", "rm", "-f", "wt")
	l.must("exec", "wt", "mkdir", "-p", "/work/old")

	// watch starts lodge watch; ended tells its end.
	watch := func(args ...string) (events <-chan string, ended <-chan error) {
		t.Helper()
		cmd := exec.Command(l.bin, append([]string{"watch", "--format", "json"}, args...)...)
		cmd.Env = l.env
		out, _ := cmd.StdoutPipe()
		r, w := io.Pipe()
		cmd.Stderr = w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			err := cmd.Wait()
			w.Close()
			done <- err
			close(done) // for the cleanup, after whoever took err
		}()
		go io.Copy(io.Discard, r)
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		sc := bufio.NewScanner(out)
		if !sc.Scan() || !strings.Contains(sc.Text(), `"type":"watching"`) {
			t.Fatalf("lodge watch %q began with %q", args, sc.Text())
		}
		return watchEvents(sc), done
	}
	root, rootEnded := watch("-r", "wt", "/work")
	data, _ := watch("wt", "/data")
	l.must("exec", "wt", "sh", "-c", "echo 1 > /work/a; mkdir -p /work/n/m; echo 2 > /work/n/m/f; mv /work/a /work/old/b; chmod 600 /work/old/b; rm -r /work/n; echo 3 > /data/v")
	nextEvents(t, "-r /work", root, "create /work/a", "write /work/a", "create /work/n", "create /work/n/m/f",
		"rename /work/a", "create /work/old/b", "chmod /work/old/b", "remove /work/n/m/f", "remove /work/n")
	nextEvents(t, "/data", data, "create /data/v", "write /data/v")

	// The directory removed: the watch says so, and ends.
	l.must("exec", "wt", "rm", "-r", "/work")
	nextEvents(t, "-r /work", root, "remove /work")
	select {
	case err := <-rootEnded:
		if err != nil {
			t.Errorf("lodge watch after its directory went: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("lodge watch outlived its directory")
	}

	for path, why := range map[string]string{"/none": "no such file", "/etc/hostname": "not a directory", "rel": "absolute path"} {
		if out := l.run("", "watch", "wt", path); out.code == 0 || !strings.Contains(out.stderr, why) {
			t.Errorf("watch %s: exit %d, %q; want %q", path, out.code, out.stderr, why)
		}
	}

	// The container ends: so does its watch, saying nothing of use but
	// ending.
	_, tmpEnded := watch("wt", "/tmp")
	l.must("rm", "-f", "wt")
	select {
	case <-tmpEnded:
	case <-time.After(60 * time.Second):
		t.Errorf("lodge watch outlived its container")
	}

	// The sandbox service's watch: a stream of the same events.
	sock, _ := serveSandboxes(l, ref)
	api := newSandboxAPI(t, sock)
	var sb struct{ ID string }
	if code := api.call("POST", "/v1/sandboxes", map[string]any{}, &sb); code != 201 {
		t.Fatalf("create: %d", code)
	}
	req, _ := http.NewRequest("GET", "http://lodge/v1/sandboxes/"+sb.ID+"/files/watch?path=/tmp&recursive=true", nil)
	resp, err := api.c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch: %v %v", resp, err)
	}
	if code := api.call("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/up/loaded.txt", []byte("x"), nil); code != 204 {
		t.Fatalf("write: %d", code)
	}
	// What the file got before its new directory was watched may be
	// missed; what it gets after is not.
	events := watchEvents(bufio.NewScanner(resp.Body))
	nextEvents(t, "the service's watch", events, "create /tmp/up", "create /tmp/up/loaded.txt")
	if code := api.call("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/up/loaded.txt", []byte("y"), nil); code != 204 {
		t.Fatalf("write: %d", code)
	}
	nextEvents(t, "the service's watch", events, "write /tmp/up/loaded.txt")
	resp.Body.Close()
	var e struct{ Error string }
	if code := api.call("GET", "/v1/sandboxes/"+sb.ID+"/files/watch?path=/none", nil, &e); code != 404 || !strings.Contains(e.Error, "no such file") {
		t.Errorf("watch of no directory: %d %q", code, e.Error)
	}
	if code := api.call("DELETE", "/v1/sandboxes/"+sb.ID, nil, nil); code != 204 {
		t.Errorf("delete: %d", code)
	}
}
