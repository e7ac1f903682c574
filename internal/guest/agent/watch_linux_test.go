package agent

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// watching runs a watcher on dir (in root) and returns its events as
// they come.
func watching(t *testing.T, root, dir string, recursive bool) (<-chan transport.WatchEvent, *watcher) {
	t.Helper()
	rf, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	w, err := newWatcher(rf, dir, recursive)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ended := make(chan error, 1)
	go func() { ended <- w.run(pw); pw.Close() }()
	events := make(chan transport.WatchEvent, 256)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var e transport.WatchEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("event %q: %v", sc.Text(), err)
				return
			}
			events <- e
		}
	}()
	t.Cleanup(func() { w.close(); pr.Close(); <-ended })
	return events, w
}

// expect reads events until want came in order (others may come between).
func expect(t *testing.T, events <-chan transport.WatchEvent, want ...transport.WatchEvent) {
	t.Helper()
	var got []transport.WatchEvent
	timeout := time.After(5 * time.Second)
	for len(want) > 0 {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("events ended; got %v, still waiting for %v", got, want)
			}
			got = append(got, e)
			if e == want[0] {
				want = want[1:]
			}
		case <-timeout:
			t.Fatalf("got %v, still waiting for %v", got, want)
		}
	}
}

// quiet checks that nothing but what is allowed comes for a while.
func quiet(t *testing.T, events <-chan transport.WatchEvent, bad func(transport.WatchEvent) bool) {
	t.Helper()
	timeout := time.After(300 * time.Millisecond)
	for {
		select {
		case e := <-events:
			if bad(e) {
				t.Errorf("unexpected event %+v", e)
			}
		case <-timeout:
			return
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWatchReportsChanges(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "work/old"), 0o755))
	events, _ := watching(t, root, "/work", false)

	f := filepath.Join(root, "work/a.txt")
	must(t, os.WriteFile(f, []byte("x"), 0o644))
	expect(t, events, transport.WatchEvent{Type: "create", Name: "a.txt"}, transport.WatchEvent{Type: "write", Name: "a.txt"})
	must(t, os.Chmod(f, 0o600))
	expect(t, events, transport.WatchEvent{Type: "chmod", Name: "a.txt"})
	must(t, os.Rename(f, filepath.Join(root, "work/b.txt")))
	expect(t, events, transport.WatchEvent{Type: "rename", Name: "a.txt"}, transport.WatchEvent{Type: "create", Name: "b.txt"})
	must(t, os.Remove(filepath.Join(root, "work/b.txt")))
	expect(t, events, transport.WatchEvent{Type: "remove", Name: "b.txt"})
	must(t, os.Mkdir(filepath.Join(root, "work/sub"), 0o755))
	expect(t, events, transport.WatchEvent{Type: "create", Name: "sub", Dir: true})

	// Not recursive: what happens below its directories is not told.
	must(t, os.WriteFile(filepath.Join(root, "work/old/deep"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(root, "work/sub/deep"), nil, 0o644))
	quiet(t, events, func(e transport.WatchEvent) bool { return strings.Contains(e.Name, "deep") })

	// The directory removed: told, and the watch ends.
	must(t, os.RemoveAll(filepath.Join(root, "work")))
	expect(t, events, transport.WatchEvent{Type: "remove", Dir: true})
	for range events {
	}
}

func TestWatchRecursive(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "w/a/b"), 0o755))
	events, _ := watching(t, root, "/w", true)

	must(t, os.WriteFile(filepath.Join(root, "w/a/b/f"), []byte("1"), 0o644))
	expect(t, events, transport.WatchEvent{Type: "create", Name: "a/b/f"})
	// A tree made at once: what was in it before it was watched is told too.
	must(t, os.MkdirAll(filepath.Join(root, "w/n1/n2/n3"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "w/n1/n2/n3/g"), nil, 0o644))
	expect(t, events, transport.WatchEvent{Type: "create", Name: "n1", Dir: true}, transport.WatchEvent{Type: "create", Name: "n1/n2/n3/g"})
	// A directory moved: its tree goes on being watched, by its new names.
	must(t, os.Rename(filepath.Join(root, "w/a"), filepath.Join(root, "w/z")))
	expect(t, events, transport.WatchEvent{Type: "rename", Name: "a", Dir: true}, transport.WatchEvent{Type: "create", Name: "z", Dir: true})
	must(t, os.WriteFile(filepath.Join(root, "w/z/b/h"), nil, 0o644))
	expect(t, events, transport.WatchEvent{Type: "create", Name: "z/b/h"})
}

// A symlink in the container's root resolves inside it, and a recursive
// watch follows none: only the container's own tree is watched.
func TestWatchStaysInRoot(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	must(t, os.Symlink("/", filepath.Join(root, "abs")))
	must(t, os.Symlink("../../../..", filepath.Join(root, "up")))
	must(t, os.MkdirAll(filepath.Join(root, "w"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(root, "w/out")))

	for _, dir := range []string{"/abs", "/up", "/../../.."} {
		events, _ := watching(t, root, dir, false)
		name := "f" + strings.ReplaceAll(dir, "/", "_")
		must(t, os.WriteFile(filepath.Join(root, name), nil, 0o644))
		expect(t, events, transport.WatchEvent{Type: "create", Name: name})
	}
	events, _ := watching(t, root, "/w", true)
	must(t, os.WriteFile(filepath.Join(outside, "secret"), nil, 0o644))
	quiet(t, events, func(transport.WatchEvent) bool { return true })

	rf, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	must(t, err)
	defer rf.Close()
	must(t, os.WriteFile(filepath.Join(root, "file"), nil, 0o644))
	for dir, why := range map[string]string{"/file": "not a directory", "/none": "no such file", "rel": "not an absolute path", "/w/out": "no such file"} {
		if w, err := newWatcher(rf, dir, false); err == nil || !strings.Contains(err.Error(), why) {
			if w != nil {
				w.close()
			}
			t.Errorf("watch %s: %v, want %q", dir, err, why)
		}
	}
}
