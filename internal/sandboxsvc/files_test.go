package sandboxsvc

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// stat's lines as busybox and coreutils print them: each type, a name
// holding the separator or a newline, the root's entries.
func TestParseStat(t *testing.T) {
	t.Parallel()
	out := "regular file|12|644|1700000000|./a.txt\n" +
		"directory|4096|755|1700000001|./sub\n" +
		"symbolic link|3|777|1700000002|./l|ink\n" +
		"regular empty file|0|600|1700000003|./two\nlines\n" +
		"fifo|0|644|1700000004|./p\n"
	got := parseStat([]byte(out), "/w")
	want := []FileInfo{
		{Name: "a.txt", Path: "/w/a.txt", Type: "file", Size: 12, Mode: "644", ModifiedAt: time.Unix(1700000000, 0).UTC()},
		{Name: "sub", Path: "/w/sub", Type: "dir", Size: 4096, Mode: "755", ModifiedAt: time.Unix(1700000001, 0).UTC()},
		{Name: "l|ink", Path: "/w/l|ink", Type: "symlink", Size: 3, Mode: "777", ModifiedAt: time.Unix(1700000002, 0).UTC()},
		{Name: "two\nlines", Path: "/w/two\nlines", Type: "file", Size: 0, Mode: "600", ModifiedAt: time.Unix(1700000003, 0).UTC()},
		{Name: "p", Path: "/w/p", Type: "other", Size: 0, Mode: "644", ModifiedAt: time.Unix(1700000004, 0).UTC()},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries: %+v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if one := parseStat([]byte("directory|4096|755|1|/srv/app\n"), ""); len(one) != 1 || one[0].Name != "app" || one[0].Path != "/srv/app" {
		t.Errorf("stat of one path: %+v", one)
	}
}

// The routes: each operation runs its command in the sandbox with the
// path as an argument (never in the script's text), a sandbox's error is
// a 404 with its words, and bad requests are refused before anything
// runs.
func TestFileOpsRoutes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	sb := f.create(t, CreateRequest{})
	var ran [][]string
	f.run.exec = func(_ string, x ExecArgs) int {
		ran = append(ran, x.Argv)
		switch {
		case x.Argv[0] == "stat" && x.Argv[4] == "/etc/hosts":
			io.WriteString(x.Stdout, "regular file|174|644|1700000000|/etc/hosts\n")
		case x.Argv[0] == "stat":
			io.WriteString(x.Stderr, "stat: can't stat '"+x.Argv[4]+"': No such file or directory\n")
			return 1
		case x.Argv[0] == "/bin/sh" && strings.Contains(x.Argv[2], "find"):
			io.WriteString(x.Stdout, "directory|4096|755|1700000000|./b\nregular file|1|644|1700000000|./a\n")
		}
		return 0
	}
	base := "/v1/sandboxes/" + sb.ID + "/files"
	var fi FileInfo
	if code := f.call(t, "GET", base+"?path=/etc/hosts&format=stat", nil, &fi); code != 200 || fi.Name != "hosts" || fi.Size != 174 || fi.Type != "file" {
		t.Errorf("stat: %d %+v", code, fi)
	}
	var e map[string]string
	if code := f.call(t, "GET", base+"?path=/nope&format=stat", nil, &e); code != 404 || !strings.Contains(e["error"], "No such file") {
		t.Errorf("stat of a missing file: %d %v", code, e)
	}
	var l []FileInfo
	if code := f.call(t, "GET", base+"?path=/&format=list", nil, &l); code != 200 || len(l) != 2 || l[0].Path != "/a" || l[1].Type != "dir" {
		t.Errorf("list /: %d %+v", code, l)
	}
	if code := f.call(t, "DELETE", base+"?path=/work/x", nil, nil); code != http.StatusNoContent {
		t.Errorf("remove: %d", code)
	}
	if code := f.call(t, "PUT", base+"?path=/work/new&format=dir", nil, nil); code != http.StatusNoContent {
		t.Errorf("mkdir: %d", code)
	}
	if code := f.call(t, "POST", base+"/move", MoveRequest{From: "/work/a", To: "/work/b/c"}, nil); code != http.StatusNoContent {
		t.Errorf("move: %d", code)
	}
	last := func() []string { return ran[len(ran)-1] }
	if a := last(); a[0] != "/bin/sh" || a[len(a)-2] != "/work/a" || a[len(a)-1] != "/work/b/c" || strings.Contains(a[2], "/work") {
		t.Errorf("move ran %q", a)
	}
	n := len(ran)
	for _, bad := range []struct{ method, path string }{
		{"DELETE", base + "?path=/"},
		{"DELETE", base + "?path=rel"},
		{"GET", base + "?path=/x&format=zip"},
		{"PUT", base + "?path=/x&format=zip"},
		{"POST", base + "/move"},
	} {
		body := any(nil)
		if bad.method == "POST" {
			body = MoveRequest{From: "/a", To: "b"}
		}
		if code := f.call(t, bad.method, bad.path, body, &e); code != 400 {
			t.Errorf("%s %s: %d %v", bad.method, bad.path, code, e)
		}
	}
	if len(ran) != n {
		t.Errorf("a refused request ran %q", ran[n:])
	}
}
