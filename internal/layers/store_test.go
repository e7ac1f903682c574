package layers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (device nodes, trusted xattrs, ownership)")
	}
}

// layerDir makes a layer the way containerd's overlay snapshotter unpacks
// one: a whiteout is a 0/0 character device, an opaque directory carries
// trusted.overlay.opaque=y.
func layerDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(d, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(d, "etc", "hello"), []byte("hello from a layer\n"), 0o640))
	must(os.Chown(filepath.Join(d, "etc", "hello"), 1000, 1001))
	must(os.WriteFile(filepath.Join(d, "suid"), []byte("#!/bin/sh\n"), 0o755))
	must(unix.Chmod(filepath.Join(d, "suid"), 0o4755))
	must(os.WriteFile(filepath.Join(d, "empty"), nil, 0o600))
	must(os.Symlink("etc/hello", filepath.Join(d, "link")))
	must(unix.Mknod(filepath.Join(d, "gone"), unix.S_IFCHR|0o000, 0)) // whiteout
	must(os.Mkdir(filepath.Join(d, "opaque"), 0o755))
	must(unix.Setxattr(filepath.Join(d, "opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(os.WriteFile(filepath.Join(d, "opaque", "new"), []byte("new\n"), 0o644))
	must(unix.Mkfifo(filepath.Join(d, "fifo"), 0o620))
	must(unix.Chmod(filepath.Join(d, "fifo"), 0o620))
	must(os.Mkdir(filepath.Join(d, "tmp"), 0o1777))
	must(unix.Chmod(filepath.Join(d, "tmp"), 0o1777))
	return d
}

func TestFromDirKeepsWhatOverlayNeeds(t *testing.T) {
	needRoot(t)
	src := layerDir(t)
	s := &Store{Dir: t.TempDir()}
	path, made, err := s.FromDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if !made {
		t.Fatal("first FromDir did not convert")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o444 {
		t.Fatalf("image %s: %v, mode %v; want read-only 0444", path, err, fi.Mode())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	stat := func(name string) *erofs.Stat {
		t.Helper()
		fi, err := fs.Stat(img, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return fi.Sys().(*erofs.Stat)
	}
	if b, err := fs.ReadFile(img, "etc/hello"); err != nil || string(b) != "hello from a layer\n" {
		t.Errorf("etc/hello = %q, %v", b, err)
	}
	if st := stat("etc/hello"); st.UID != 1000 || st.GID != 1001 || st.Mode != 0o640 {
		t.Errorf("etc/hello: uid %d gid %d mode %v; want 1000 1001 0640", st.UID, st.GID, st.Mode)
	}
	if st := stat("suid"); st.Mode != fs.ModeSetuid|0o755 {
		t.Errorf("suid: mode %v, want setuid 0755", st.Mode)
	}
	if st := stat("tmp"); st.Mode != fs.ModeDir|fs.ModeSticky|0o777 {
		t.Errorf("tmp: mode %v, want sticky 0777 directory", st.Mode)
	}
	if st := stat("gone"); st.Mode.Type() != fs.ModeDevice|fs.ModeCharDevice || st.Rdev != 0 {
		t.Errorf("whiteout: mode %v rdev %d; want a 0/0 character device", st.Mode, st.Rdev)
	}
	if st := stat("fifo"); st.Mode != fs.ModeNamedPipe|0o620 {
		t.Errorf("fifo: mode %v", st.Mode)
	}
	if st := stat("opaque"); st.Xattrs["trusted.overlay.opaque"] != "y" {
		t.Errorf("opaque directory xattrs = %v; want trusted.overlay.opaque=y", st.Xattrs)
	}
	if target, err := fs.ReadLink(img, "link"); err != nil || target != "etc/hello" {
		t.Errorf("link -> %q, %v", target, err)
	}

	// Again: the same directory is not converted twice.
	if p2, made, err := s.FromDir(context.Background(), src); err != nil || made || p2 != path {
		t.Fatalf("second FromDir = %s, made %v, %v; want %s from the store", p2, made, err, path)
	}
	if m, _ := filepath.Glob(filepath.Join(s.Dir, "*.lock")); len(m) != 0 {
		t.Errorf("lock files left: %v", m)
	}
}

// The kernel agrees: an overlay of the image over a lower layer hides what
// the whiteout names and what the opaque directory covered.
func TestImageWhiteoutsUnderOverlay(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("no mount(8)")
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fss), "erofs") || !strings.Contains(string(fss), "overlay") {
		t.Skip("host kernel has no erofs or overlay")
	}
	base := t.TempDir()
	os.WriteFile(filepath.Join(base, "gone"), []byte("old\n"), 0o644)
	os.WriteFile(filepath.Join(base, "kept"), []byte("kept\n"), 0o644)
	os.Mkdir(filepath.Join(base, "opaque"), 0o755)
	os.WriteFile(filepath.Join(base, "opaque", "old"), []byte("old\n"), 0o644)

	s := &Store{Dir: t.TempDir()}
	img, _, err := s.FromDir(context.Background(), layerDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mnt, root := t.TempDir(), t.TempDir()
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount erofs here: %v: %s", err, out)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	if err := unix.Mount("overlay", root, "overlay", unix.MS_RDONLY, "lowerdir="+mnt+":"+base); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	if _, err := os.Lstat(filepath.Join(root, "gone")); !os.IsNotExist(err) {
		t.Errorf("whited-out file still visible: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "kept")); err != nil {
		t.Errorf("lower file lost: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "opaque", "old")); !os.IsNotExist(err) {
		t.Errorf("file under an opaque directory still visible: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "opaque", "new")); err != nil || string(b) != "new\n" {
		t.Errorf("opaque/new = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "link")); err != nil || string(b) != "hello from a layer\n" {
		t.Errorf("link reads %q, %v", b, err)
	}
}

func TestConcurrentFromDirConvertsOnce(t *testing.T) {
	needRoot(t)
	src := layerDir(t)
	s := &Store{Dir: t.TempDir()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, m, err := s.FromDir(context.Background(), src)
			if err != nil {
				t.Error(err)
			}
			if m {
				mu.Lock()
				made++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if made != 1 {
		t.Fatalf("%d conversions of one layer, want 1", made)
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 2 { // image + meta
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("store holds %v; want one image and its meta", names)
	}
}

func TestFailedConversionLeavesNothing(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	fail := func(f *os.File) error {
		f.Write([]byte("half an image"))
		return unix.ENOSPC
	}
	if _, _, err := s.get(context.Background(), "broken", "/nowhere", fail); err == nil {
		t.Fatal("conversion error not reported")
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 1 || ents[0].Name() != "broken.lock" {
		t.Fatalf("left in the store after a failed conversion: %v; want only the (free) lock file", ents)
	}
	// A later attempt succeeds.
	if _, made, err := s.get(context.Background(), "broken", "/nowhere", func(f *os.File) error { _, err := f.Write([]byte("ok")); return err }); err != nil || !made {
		t.Fatalf("retry after a failed conversion: made %v, %v", made, err)
	}
}

func TestPruneRemovesOrphans(t *testing.T) {
	needRoot(t)
	s := &Store{Dir: t.TempDir()}
	keep, gone := layerDir(t), layerDir(t)
	pk, _, err := s.FromDir(context.Background(), keep)
	if err != nil {
		t.Fatal(err)
	}
	pg, _, err := s.FromDir(context.Background(), gone)
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(gone)
	n, err := s.Prune()
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1 removed", n, err)
	}
	if _, err := os.Stat(pk); err != nil {
		t.Errorf("image of a live layer removed: %v", err)
	}
	if _, err := os.Stat(pg); !os.IsNotExist(err) {
		t.Errorf("orphan image kept: %v", err)
	}
}

func TestReadBundleAcceptsOnlyStoreImages(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	img := filepath.Join(s.Dir, "diff-ab.erofs")
	os.WriteFile(img, []byte("x"), 0o444)
	outside := filepath.Join(t.TempDir(), "x.erofs")
	os.WriteFile(outside, []byte("x"), 0o444)
	os.Symlink(outside, filepath.Join(s.Dir, "link.erofs"))
	bundle := t.TempDir()
	if bl, err := s.ReadBundle(bundle); bl != nil || err != nil {
		t.Fatalf("bundle without %s: %v, %v", BundleFile, bl, err)
	}
	for _, tc := range []struct {
		images []string
		ok     bool
	}{
		{[]string{img}, true},
		{[]string{outside}, false},
		{[]string{filepath.Join(s.Dir, "link.erofs")}, false},
		{[]string{s.Dir + "/../" + filepath.Base(s.Dir) + "/diff-ab.erofs"}, false},
		{[]string{"/etc/shadow"}, false},
		{[]string{filepath.Join(s.Dir, "missing.erofs")}, false},
		{nil, false},
	} {
		b, _ := json.Marshal(BundleLayers{Images: tc.images})
		os.WriteFile(filepath.Join(bundle, BundleFile), b, 0o644)
		bl, err := s.ReadBundle(bundle)
		if (err == nil) != tc.ok || (tc.ok && len(bl.Images) != 1) {
			t.Errorf("images %v: %v, %v; want ok=%v", tc.images, bl, err, tc.ok)
		}
	}
}

// Names of one file stay names of one inode, whose data is stored once
// (busybox's applets: hundreds of names of one binary). The reader and
// the kernel both see one inode with every name counted.
func TestFromDirHardLinksShareOneInode(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	data := bytes.Repeat([]byte("busybox\n"), 128<<10) // 1 MiB
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "sbin", "usr/bin"} {
		must(os.MkdirAll(filepath.Join(src, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(src, "bin", "busybox"), data, 0o755))
	var names []string
	for i := range 200 { // enough names for directories of several blocks
		d := []string{"bin", "sbin", "usr/bin"}[i%3]
		n := filepath.Join(d, fmt.Sprintf("applet-with-a-long-name-%03d", i))
		must(os.Link(filepath.Join(src, "bin", "busybox"), filepath.Join(src, n)))
		names = append(names, n)
	}
	must(os.WriteFile(filepath.Join(src, "bin", "other"), []byte("not a link\n"), 0o644))
	s := &Store{Dir: t.TempDir()}
	p, _, err := s.FromDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Size() > 2<<20 {
		t.Errorf("image of a 1 MiB file with 201 names is %d bytes: its data is stored more than once", fi.Size())
	}
	f, _ := os.Open(p)
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	first, err := fs.Stat(img, "bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	want := first.Sys().(*erofs.Stat)
	if want.Nlink != 201 {
		t.Errorf("bin/busybox has %d links, want 201", want.Nlink)
	}
	for _, n := range names {
		fi, err := fs.Stat(img, n)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*erofs.Stat); st.Ino != want.Ino || st.Size != int64(len(data)) {
			t.Fatalf("%s: inode %d, %d bytes; want bin/busybox's inode %d, %d bytes", n, st.Ino, st.Size, want.Ino, len(data))
		}
	}
	if b, err := fs.ReadFile(img, names[len(names)-1]); err != nil || !bytes.Equal(b, data) {
		t.Errorf("a link's content differs (%d bytes, %v)", len(b), err)
	}
	if b, _ := fs.ReadFile(img, "bin/other"); string(b) != "not a link\n" {
		t.Errorf("bin/other = %q", b)
	}

	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", p, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount erofs here: %v: %s", err, out)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	var bb, ln unix.Stat_t
	must(unix.Stat(filepath.Join(mnt, "bin", "busybox"), &bb))
	for _, n := range names {
		must(unix.Stat(filepath.Join(mnt, n), &ln))
		if ln.Ino != bb.Ino || ln.Nlink != 201 {
			t.Fatalf("kernel: %s is inode %d with %d links; bin/busybox is %d", n, ln.Ino, ln.Nlink, bb.Ino)
		}
	}
	if b, err := os.ReadFile(filepath.Join(mnt, names[100])); err != nil || !bytes.Equal(b, data) {
		t.Errorf("kernel: a link reads %d bytes, %v", len(b), err)
	}
}
