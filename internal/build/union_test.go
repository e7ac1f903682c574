package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/layers"
)

// layerImage converts a layer of the given entries (NAME or NAME->LINK;
// a trailing / is a directory) to an erofs image, as a pull does.
func layerImage(t *testing.T, s *layers.Store, names ...string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		h := &tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644}
		if name, link, ok := strings.Cut(n, "->"); ok {
			h = &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: link, Mode: 0o777}
		} else if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		tw.WriteHeader(h)
	}
	tw.Close()
	p, _, err := s.FromTar(context.Background(), fmt.Sprintf("sha256:%x", sha256.Sum256(buf.Bytes())), bytes.NewReader(buf.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The union shows what overlayfs shows: a whiteout hides a lower file, an
// opaque directory hides the lower one's content, upper names shadow
// lower ones, and links resolve inside the root.
func TestUnion(t *testing.T) {
	s := &layers.Store{Dir: filepath.Join(t.TempDir(), "layers")}
	lower := layerImage(t, s, "etc/", "etc/passwd", "etc/group", "data/", "data/old", "usr/", "usr/bin/", "usr/bin/tool", "bin->usr/bin", "abs->/usr/bin/tool", "loop->loop")
	upper := layerImage(t, s, "etc/", "etc/.wh.group", "etc/new", "data/", "data/.wh..wh..opq", "data/fresh")
	u, err := openUnion([]string{upper, lower})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	names := func(p string) string {
		ents, err := u.readDir(p)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.name)
		}
		return strings.Join(out, ",")
	}
	if got := names("/etc"); got != "new,passwd" {
		t.Errorf("/etc = %s, want new,passwd (group whited out)", got)
	}
	if got := names("/data"); got != "fresh" {
		t.Errorf("/data = %s, want fresh (opaque)", got)
	}
	if _, _, err := u.lstat("/etc/group"); err == nil {
		t.Error("a whited-out file is seen")
	}
	if _, _, err := u.lstat("/data/old"); err == nil {
		t.Error("a file under an opaque directory is seen")
	}
	for in, want := range map[string]string{"/bin/tool": "/usr/bin/tool", "/abs": "/usr/bin/tool", "/bin/../etc": "/etc", "/../../etc/passwd": "/etc/passwd"} {
		if got, err := u.resolve(in, true); err != nil || got != want {
			t.Errorf("resolve(%s) = %q, %v; want %s", in, got, err, want)
		}
	}
	if _, err := u.resolve("/loop", true); err == nil {
		t.Error("a link loop resolved")
	}
}

// USER and --chown names are the image's: a user's group is its primary
// one, a number the image does not list stands for itself.
func TestRunUser(t *testing.T) {
	s := &layers.Store{Dir: filepath.Join(t.TempDir(), "layers")}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range map[string]string{"etc/passwd": "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n", "etc/group": "root:x:0:\nstaff:x:50:\n"} {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	tw.Close()
	p, _, err := s.FromTar(context.Background(), fmt.Sprintf("sha256:%x", sha256.Sum256(buf.Bytes())), bytes.NewReader(buf.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := openUnion([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for in, want := range map[string]string{"nobody": "65534:65533", "nobody:staff": "65534:50", "1000": "1000:0", "0:50": "0:50", "65534": "65534:65533"} {
		if got, err := runUser(u, in); err != nil || got != want {
			t.Errorf("runUser(%s) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"ghost", "nobody:nogroup", "-1"} {
		if _, err := runUser(u, bad); err == nil {
			t.Errorf("runUser(%s) accepted", bad)
		}
	}
	if o, err := lookupOwner(u, "nobody:staff"); err != nil || *o != [2]int{65534, 50} {
		t.Errorf("lookupOwner = %v, %v", o, err)
	}
}
