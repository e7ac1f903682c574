package agent

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// tarEntry is what a test checks of one entry of a changes tar.
type tarEntry struct {
	typ     byte
	link    string
	body    string
	changed bool
}

func readChanges(t *testing.T, b []byte) map[string]tarEntry {
	t.Helper()
	got := map[string]tarEntry{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if _, dup := got[h.Name]; dup {
			t.Errorf("%s twice", h.Name)
		}
		got[h.Name] = tarEntry{typ: h.Typeflag, link: h.Linkname, body: string(body), changed: h.PAXRecords[ChangedRecord] == "1"}
	}
}

// The changes of a real overlay, made by the host's overlayfs as a
// guest's would be: a file added, one changed, one deleted (a whiteout),
// a directory deleted and made again (opaque), hard links, and mount
// points the runtime made, which are left out with the directories that
// hold only them.
func TestChangesOfAnOverlay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlayfs)")
	}
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{lower + "/etc", lower + "/gone/deep", lower + "/opq", upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{"etc/passwd": "root\n", "etc/motd": "hi\n", "gone/deep/f": "x", "opq/old": "old"} {
		if err := os.WriteFile(filepath.Join(lower, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Skipf("overlayfs: %v", err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(merged, 0)
		}
	}()
	m := func(p string) string { return filepath.Join(merged, p) }
	steps := []error{
		os.WriteFile(m("new.txt"), []byte("added"), 0o640),
		os.WriteFile(m("etc/passwd"), []byte("root\nuser\n"), 0o644),
		os.Remove(m("etc/motd")),
		os.RemoveAll(m("gone")),
		os.RemoveAll(m("opq")),
		os.Mkdir(m("opq"), 0o755),
		os.WriteFile(m("opq/fresh"), []byte("fresh"), 0o644),
		os.WriteFile(m("h1"), []byte("linked"), 0o644),
		os.Link(m("h1"), m("h2")),
		os.Symlink("new.txt", m("sym")),
		unix.Mkfifo(m("fifo"), 0o600),
		// The runtime's mount points: an empty file, an empty directory,
		// and a new directory holding only one.
		os.WriteFile(m("etc/hosts"), nil, 0o644),
		os.Mkdir(m("proc"), 0o555),
		os.MkdirAll(m("data/vol"), 0o755),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	mountPoints := map[string]bool{"/etc/hosts": true, "/proc": true, "/data/vol": true}
	ents, err := walkUpper(upper, []string{lower}, mountPoints, false)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := writeEntries(tw, upper, ents); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	got := readChanges(t, buf.Bytes())
	want := map[string]tarEntry{
		"new.txt":          {typ: tar.TypeReg, body: "added"},
		"etc/":             {typ: tar.TypeDir, changed: true},
		"etc/passwd":       {typ: tar.TypeReg, body: "root\nuser\n", changed: true},
		"etc/.wh.motd":     {typ: tar.TypeReg},
		".wh.gone":         {typ: tar.TypeReg},
		"opq/":             {typ: tar.TypeDir, changed: true},
		"opq/.wh..wh..opq": {typ: tar.TypeReg},
		"opq/fresh":        {typ: tar.TypeReg, body: "fresh"},
		"h1":               {typ: tar.TypeReg, body: "linked"},
		"h2":               {typ: tar.TypeLink, link: "h1"},
		"sym":              {typ: tar.TypeSymlink, link: "new.txt"},
		"fifo":             {typ: tar.TypeFifo},
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		} else if g != w {
			t.Errorf("%s = %+v, want %+v", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected %s", name)
		}
	}
	// The opaque marker comes after its directory, so that an unpacker
	// clears the directory before it fills it.
	names := tarNames(t, buf.Bytes())
	if i, j := indexOf(names, "opq/"), indexOf(names, "opq/.wh..wh..opq"); i < 0 || j < i {
		t.Errorf("order %v", names)
	}
}

func tarNames(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err != nil {
			return out
		}
		out = append(out, h.Name)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// A root without a writable layer (a pod holder's, a read-only one) has
// no changes to give, and says so instead of sending an empty layer.
func TestWritableOf(t *testing.T) {
	if _, _, ok := writableOf([]string{"/run/lodge/l/s1", "/run/lodge/l/3/root"}); ok {
		t.Error("a read-only overlay taken for a writable one")
	}
	upper, lowers, ok := writableOf([]string{"/run/lodge/l/s1", "/run/lodge/l/s2", "/run/lodge/l/3/rw", "/run/lodge/l/3/root"})
	if !ok || upper != "/run/lodge/l/3/rw/upper" || strings.Join(lowers, ":") != "/run/lodge/l/s1:/run/lodge/l/s2" {
		t.Errorf("writableOf = %q %q %v", upper, lowers, ok)
	}
}

// fakeConfigRunner is a container as writeChanges sees it: its config's
// mounts (a unit seam; nothing else is called).
type fakeConfigRunner struct {
	runner
	cfg configs.Config
}

func (f fakeConfigRunner) Config() configs.Config { return f.cfg }

// writeChanges gives the writable layer, or with whole the merged root
// (the image's files and the container's, no whiteout, the runtime's
// mount points left out), and ends each stream with its end record.
func TestWriteChangesAndWholeRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (overlayfs)")
	}
	base := t.TempDir()
	lower, rw, root := filepath.Join(base, "lower"), filepath.Join(base, "rw"), filepath.Join(base, "root")
	for _, d := range []string{lower + "/bin", lower + "/etc", rw + "/upper", rw + "/work", root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(lower+"/bin/tool", []byte("elf"), 0o755)
	os.WriteFile(lower+"/etc/gone", []byte("x"), 0o644)
	if err := unix.Mount("overlay", root, "overlay", 0, "lowerdir="+lower+",upperdir="+rw+"/upper,workdir="+rw+"/work"); err != nil {
		t.Skipf("overlayfs: %v", err)
	}
	defer unix.Unmount(root, 0)
	os.WriteFile(root+"/new", []byte("mine"), 0o644)
	os.Remove(root + "/etc/gone")
	os.WriteFile(root+"/etc/hosts", nil, 0o644) // the runtime's mount point
	cs := &containers{byID: map[string]*container{"c1": {
		c:       fakeConfigRunner{cfg: configs.Config{Mounts: []*configs.Mount{{Destination: "/etc/hosts"}}}},
		layered: []string{lower, rw, root},
	}}}
	stream := func(whole bool) map[string]tarEntry {
		var buf bytes.Buffer
		if err := cs.writeChanges("c1", whole, &buf); err != nil {
			t.Fatal(err)
		}
		got := readChanges(t, buf.Bytes())
		if _, ok := got["end"]; !ok {
			t.Errorf("whole=%v: no end record", whole)
		}
		delete(got, "end")
		return got
	}
	names := func(m map[string]tarEntry) string {
		var out []string
		for n := range m {
			out = append(out, n)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	if got := names(stream(false)); got != "etc/ etc/.wh.gone new" {
		t.Errorf("changes: %s", got)
	}
	whole := stream(true)
	if got := names(whole); got != "bin/ bin/tool etc/ new" {
		t.Errorf("whole root: %s", got)
	}
	if whole["bin/tool"].body != "elf" || whole["new"].body != "mine" {
		t.Errorf("whole root's contents: %+v", whole)
	}
	var buf bytes.Buffer
	if err := cs.writeChanges("nope", false, &buf); err == nil {
		t.Error("an unknown container's changes were written")
	}
}
