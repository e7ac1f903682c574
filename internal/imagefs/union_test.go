package imagefs

import (
	"archive/tar"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/layers/layerstest"
)

// layerImage converts a layer of the given entries (NAME or NAME->LINK;
// a trailing / is a directory) to an erofs image, as a pull does.
func layerImage(t *testing.T, s *layers.Store, names ...string) string {
	t.Helper()
	var entries []layerstest.Entry
	for _, n := range names {
		h := tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644}
		if name, link, ok := strings.Cut(n, "->"); ok {
			h = tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: link, Mode: 0o777}
		} else if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		entries = append(entries, layerstest.Entry{Hdr: h})
	}
	return layerstest.Image(t, s, entries...)
}

// The union shows what overlayfs shows: a whiteout hides a lower file, an
// opaque directory hides the lower one's content, upper names shadow
// lower ones, and links resolve inside the root.
func TestUnion(t *testing.T) {
	s := &layers.Store{Dir: filepath.Join(t.TempDir(), "layers")}
	lower := layerImage(t, s, "etc/", "etc/passwd", "etc/group", "data/", "data/old", "usr/", "usr/bin/", "usr/bin/tool", "bin->usr/bin", "abs->/usr/bin/tool", "loop->loop")
	upper := layerImage(t, s, "etc/", "etc/.wh.group", "etc/new", "data/", "data/.wh..wh..opq", "data/fresh")
	u, err := Open([]string{upper, lower})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	names := func(p string) string {
		ents, err := u.ReadDir(p)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name)
		}
		return strings.Join(out, ",")
	}
	if got := names("/etc"); got != "new,passwd" {
		t.Errorf("/etc = %s, want new,passwd (group whited out)", got)
	}
	if got := names("/data"); got != "fresh" {
		t.Errorf("/data = %s, want fresh (opaque)", got)
	}
	if _, _, err := u.Lstat("/etc/group"); err == nil {
		t.Error("a whited-out file is seen")
	}
	if _, _, err := u.Lstat("/data/old"); err == nil {
		t.Error("a file under an opaque directory is seen")
	}
	for in, want := range map[string]string{"/bin/tool": "/usr/bin/tool", "/abs": "/usr/bin/tool", "/bin/../etc": "/etc", "/../../etc/passwd": "/etc/passwd"} {
		if got, err := u.Resolve(in, true); err != nil || got != want {
			t.Errorf("resolve(%s) = %q, %v; want %s", in, got, err, want)
		}
	}
	if _, err := u.Resolve("/loop", true); err == nil {
		t.Error("a link loop resolved")
	}
}
