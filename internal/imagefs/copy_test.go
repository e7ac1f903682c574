package imagefs

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/layers/layerstest"
)

// tarLayer is a layer image of hdrs, body each regular file's content.
func tarLayer(t *testing.T, s *layers.Store, body string, hdrs ...tar.Header) string {
	t.Helper()
	var entries []layerstest.Entry
	for _, h := range hdrs {
		entries = append(entries, layerstest.Entry{Hdr: h, Body: map[bool]string{true: body}[h.Typeflag == tar.TypeReg]})
	}
	return layerstest.Image(t, s, entries...)
}

// An empty volume takes the image's directory as docker fills it: what
// the container sees there (upper layers' files, not what a whiteout or
// an opaque directory hides), with owners, modes, times, links and user
// attributes; the volume's root takes the directory's owner and mode; no
// device node, set-id bit or file capability reaches the host; a volume
// with entries, and a path that is no directory of the image, are left
// as they are.
func TestCopyInto(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files the image's owners")
	}
	s := &layers.Store{Dir: filepath.Join(t.TempDir(), "layers")}
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	dir := func(name string, mode int64, uid int) tar.Header {
		return tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: mtime}
	}
	file := func(name string, mode int64, uid int) tar.Header {
		return tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: uid, ModTime: mtime}
	}
	lower := tarLayer(t, s, "lower\n",
		dir("srv/", 0o750, 999), file("srv/gone", 0o644, 0), dir("srv/cache/", 0o755, 0), file("srv/cache/old", 0o644, 0),
		file("srv/shadowed", 0o644, 0))
	withCap := file("srv/bin/ping", 0o4755, 0)
	withCap.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "kept", "SCHILY.xattr.trusted.other": "dropped",
		"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}
	upper := tarLayer(t, s, "upper\n",
		dir("srv/", 0o2750, 999), tar.Header{Typeflag: tar.TypeChar, Name: "srv/.wh.gone"},
		dir("srv/cache/", 0o755, 0), tar.Header{Typeflag: tar.TypeReg, Name: "srv/cache/.wh..wh..opq"},
		file("srv/cache/new", 0o600, 1000), file("srv/shadowed", 0o640, 1000),
		dir("srv/bin/", 0o755, 0), withCap,
		tar.Header{Typeflag: tar.TypeLink, Name: "srv/bin/ping6", Linkname: "srv/bin/ping"},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "srv/bin/up", Linkname: "/etc/passwd", Uid: 7, Gid: 7},
		tar.Header{Typeflag: tar.TypeChar, Name: "srv/disk", Devmajor: 8, Devminor: 0, Mode: 0o666},
		tar.Header{Typeflag: tar.TypeSymlink, Name: "data", Linkname: "srv"},
		file("etc-file", 0o644, 0))
	u, err := Open([]string{upper, lower})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	if fi, _, err := u.Lstat("/srv/bin/ping"); err != nil || Mode(fi)&os.ModeSetuid == 0 || fi.Sys().(*erofs.Stat).Xattrs["security.capability"] == "" {
		t.Fatalf("the image's /srv/bin/ping lacks its set-user-ID bit or capability: %v", err)
	}
	vol := t.TempDir()
	copied, skipped, err := u.CopyInto("/data", vol) // through the image's link
	if err != nil || !copied {
		t.Fatalf("CopyInto = %v, %v", copied, err)
	}
	if len(skipped) != 1 || skipped[0] != "/srv/disk" {
		t.Errorf("skipped %q, want the device node", skipped)
	}
	owner := func(p string) (fs os.FileMode, uid, gid uint32) {
		fi, err := os.Lstat(filepath.Join(vol, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return fi.Mode(), st.Uid, st.Gid
	}
	for p, want := range map[string]string{
		".":         "drwxr-x--- 999:999",
		"cache/new": "-rw------- 1000:1000",
		"shadowed":  "-rw-r----- 1000:1000",
		"bin/ping":  "-rwxr-xr-x 0:0",
		"bin/up":    "Lrwxrwxrwx 7:7",
	} {
		m, uid, gid := owner(p)
		if got := fmt.Sprintf("%v %d:%d", m, uid, gid); got != want {
			t.Errorf("%s: %s, want %s", p, got, want)
		}
	}
	for _, p := range []string{"gone", "cache/old", "disk"} {
		if _, err := os.Lstat(filepath.Join(vol, p)); err == nil {
			t.Errorf("%s is in the volume", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(vol, "shadowed")); string(b) != "upper\n" {
		t.Errorf("shadowed holds %q, the lower layer's", b)
	}
	if l, _ := os.Readlink(filepath.Join(vol, "bin/up")); l != "/etc/passwd" {
		t.Errorf("link reads %q", l)
	}
	a, _ := os.Stat(filepath.Join(vol, "bin/ping"))
	b, _ := os.Stat(filepath.Join(vol, "bin/ping6"))
	if !os.SameFile(a, b) {
		t.Error("the hard link became two files")
	}
	if fi, _ := os.Stat(filepath.Join(vol, "cache/new")); !fi.ModTime().Equal(mtime) {
		t.Errorf("time %v, want %v", fi.ModTime(), mtime)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(vol, "bin/ping"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("user.note: %q, %v", buf[:n], err)
	}
	for _, x := range []string{"trusted.other", "security.capability"} {
		if _, err := unix.Lgetxattr(filepath.Join(vol, "bin/ping"), x, buf); err == nil {
			t.Errorf("%s reached the host", x)
		}
	}

	// Entries already: left alone.
	used := t.TempDir()
	os.WriteFile(filepath.Join(used, "mine"), nil, 0o644)
	if copied, _, err := u.CopyInto("/srv", used); copied || err != nil {
		t.Errorf("a volume with entries: copied %v, %v", copied, err)
	}
	if ents, _ := os.ReadDir(used); len(ents) != 1 {
		t.Errorf("a volume with entries now has %d", len(ents))
	}
	// No directory there: nothing.
	for _, p := range []string{"/etc-file", "/missing", "/"} {
		empty := t.TempDir()
		if copied, _, err := u.CopyInto(p, empty); copied || err != nil {
			t.Errorf("%s: copied %v, %v", p, copied, err)
		}
	}
}
