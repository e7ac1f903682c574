package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/erofs/go-erofs"
)

type entry struct {
	hdr  tar.Header
	body string
}

func mkTar(t *testing.T, es ...entry) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes(), fmt.Sprintf("sha256:%x", sha256.Sum256(buf.Bytes()))
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}

func TestFromTarWhiteoutsAndMetadata(t *testing.T) {
	b, id := mkTar(t,
		file("etc/hello", "hi\n"), // before its directory's entry
		entry{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 7}},
		entry{hdr: tar.Header{Name: "bin/su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "x"},
		entry{hdr: tar.Header{Name: "bin/link", Typeflag: tar.TypeSymlink, Linkname: "su"}},
		entry{hdr: tar.Header{Name: "bin/hard", Typeflag: tar.TypeLink, Linkname: "bin/su"}},
		entry{hdr: tar.Header{Name: "sbin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		entry{hdr: tar.Header{Name: "sbin/harder", Typeflag: tar.TypeLink, Linkname: "./bin/hard"}}, // a link to a link
		file("var/.wh.gone", ""),
		file("opq/.wh..wh..opq", ""),
		file("opq/new", "n"),
		entry{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		entry{hdr: tar.Header{Name: "cap", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "caps"}}, body: "c"},
	)
	s := &Store{Dir: t.TempDir()}
	p, made, err := s.FromTar(context.Background(), id, bytes.NewReader(b), nil)
	if err != nil || !made {
		t.Fatalf("FromTar: made %v, %v", made, err)
	}
	f, _ := os.Open(p)
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	st := func(name string) *erofs.Stat {
		t.Helper()
		fi, err := fs.Stat(img, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return fi.Sys().(*erofs.Stat)
	}
	if got := st("etc"); got.Mode != fs.ModeDir|0o750 || got.UID != 7 {
		t.Errorf("etc: %v uid %d; want the directory entry's 0750, uid 7", got.Mode, got.UID)
	}
	if got, _ := fs.ReadFile(img, "etc/hello"); string(got) != "hi\n" {
		t.Errorf("etc/hello = %q", got)
	}
	if got := st("bin/su"); got.Mode != fs.ModeSetuid|0o755 {
		t.Errorf("bin/su: %v", got.Mode)
	}
	for _, name := range []string{"bin/hard", "sbin/harder"} {
		if got, _ := fs.ReadFile(img, name); string(got) != "x" {
			t.Errorf("hard link %s content %q", name, got)
		}
		if got, want := st(name), st("bin/su"); got.Ino != want.Ino || got.Nlink != 3 || got.Mode != fs.ModeSetuid|0o755 {
			t.Errorf("hard link %s: inode %d, %d links, %v; want bin/su's inode %d with 3 links, %v", name, got.Ino, got.Nlink, got.Mode, want.Ino, want.Mode)
		}
	}
	if got := st("var/gone"); got.Mode.Type() != fs.ModeDevice|fs.ModeCharDevice || got.Rdev != 0 {
		t.Errorf("whiteout: %v rdev %d, want a 0/0 character device", got.Mode, got.Rdev)
	}
	if _, err := fs.Stat(img, "var/.wh.gone"); err == nil {
		t.Error("the whiteout marker itself is in the image")
	}
	if got := st("opq"); got.Xattrs["trusted.overlay.opaque"] != "y" {
		t.Errorf("opaque dir xattrs %v", got.Xattrs)
	}
	if _, err := fs.Stat(img, "opq/.wh..wh..opq"); err == nil {
		t.Error("the opaque marker itself is in the image")
	}
	if got := st("dev/null"); got.Rdev != 1<<8|3 {
		t.Errorf("dev/null rdev %#x", got.Rdev)
	}
	if got := st("cap"); got.Xattrs["security.capability"] != "caps" {
		t.Errorf("cap xattrs %v", got.Xattrs)
	}
	if _, made, err := s.FromTar(context.Background(), id, bytes.NewReader(b), nil); err != nil || made {
		t.Fatalf("second FromTar of the same diff ID: made %v, %v; want the stored image", made, err)
	}
}

func TestFromTarRefusesBadLayers(t *testing.T) {
	for _, tc := range []struct {
		name string
		es   []entry
	}{
		{"dotdot", []entry{file("../escape", "x")}},
		{"dotdot inside", []entry{file("a/../../escape", "x")}},
		{"absolute", []entry{file("/etc/passwd", "x")}},
		{"symlinked parent", []entry{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "/etc"}}, file("a/passwd", "x")}},
		{"duplicate", []entry{file("x", "1"), file("x", "2")}},
		{"hard link outside", []entry{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/shadow"}}}},
		{"hard link to nothing", []entry{{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "etc/shadow"}}}},
		{"hard link to a directory", []entry{{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}}, {hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "d"}}}},
		{"hard link over a file", []entry{file("a", "x"), file("h", "y"), {hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "a"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, id := mkTar(t, tc.es...)
			s := &Store{Dir: t.TempDir()}
			_, _, err := s.FromTar(context.Background(), id, bytes.NewReader(b), nil)
			if !errors.Is(err, ErrBadTar) {
				t.Fatalf("FromTar = %v, want ErrBadTar", err)
			}
			assertOnlyLocks(t, s.Dir)
		})
	}
}

func TestFromTarDigestMismatchLeavesNothing(t *testing.T) {
	b, id := mkTar(t, file("f", "content"))
	s := &Store{Dir: t.TempDir()}
	bad := errors.New("digest mismatch")
	if _, _, err := s.FromTar(context.Background(), id, bytes.NewReader(b), func() error { return bad }); !errors.Is(err, bad) {
		t.Fatalf("FromTar = %v, want the verifier's error", err)
	}
	assertOnlyLocks(t, s.Dir)
	// Truncated where a tar reader sees a clean end: the digest of what
	// was read catches it.
	h := sha256.New()
	r := io.TeeReader(bytes.NewReader(b[:1024]), h)
	check := func() error {
		if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != id {
			return fmt.Errorf("read %s, want %s", got, id)
		}
		return nil
	}
	if _, _, err := s.FromTar(context.Background(), id, r, check); err == nil {
		t.Fatal("a truncated layer converted")
	}
	assertOnlyLocks(t, s.Dir)
	if _, _, err := s.FromTar(context.Background(), "sha256:nothex", bytes.NewReader(b), nil); err == nil {
		t.Fatal("a malformed diff ID was accepted")
	}
}

func assertOnlyLocks(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("left in the store: %s", e.Name())
		}
	}
}

// A layer tar comes from a registry: whatever it holds, FromTar either
// refuses it or makes an image that reads back whole, in which every hard
// link names its target's inode.
func FuzzFromTar(f *testing.F) {
	t := &testing.T{}
	seed, _ := mkTar(t, file("bin/busybox", "bb"), entry{hdr: tar.Header{Name: "bin/sh", Typeflag: tar.TypeLink, Linkname: "bin/busybox"}},
		entry{hdr: tar.Header{Name: "usr/bin/env", Typeflag: tar.TypeLink, Linkname: "bin/sh"}}, file("etc/.wh..wh..opq", ""), file("etc/.wh.x", ""))
	f.Add(seed)
	seed, _ = mkTar(t, entry{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}}, entry{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "d"}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &Store{Dir: t.TempDir()}
		id := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
		p, _, err := s.FromTar(context.Background(), id, bytes.NewReader(b), nil)
		if err != nil {
			return
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		img, err := erofs.Open(fh)
		if err != nil {
			t.Fatalf("the image does not open: %v", err)
		}
		if err := fs.WalkDir(img, ".", func(name string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			_, err = fs.ReadFile(img, name)
			return err
		}); err != nil {
			t.Fatalf("the image does not read back: %v", err)
		}
		tr := tar.NewReader(bytes.NewReader(b))
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if hdr.Typeflag != tar.TypeLink {
				continue
			}
			name, _ := entryPath(hdr.Name)
			target, _ := entryPath(hdr.Linkname)
			a, errA := fs.Stat(img, strings.TrimPrefix(name, "/"))
			c, errC := fs.Stat(img, strings.TrimPrefix(target, "/"))
			if errA != nil || errC != nil {
				t.Fatalf("hard link %s -> %s: %v, %v", name, target, errA, errC)
			}
			if a.Sys().(*erofs.Stat).Ino != c.Sys().(*erofs.Stat).Ino {
				t.Fatalf("hard link %s is not %s's inode", name, target)
			}
		}
	})
}
