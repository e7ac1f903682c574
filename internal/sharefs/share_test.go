package sharefs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/confine"
)

// needRoot skips tests that make mount namespaces and mount.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces)")
	}
}

// startShare starts a share and opens its view, as the VMM does.
func startShare(t *testing.T) (*Share, *os.File) {
	t.Helper()
	needRoot(t)
	s, err := Start(context.Background(), filepath.Join(t.TempDir(), "share"))
	if err != nil {
		t.Fatal(err)
	}
	view, err := s.OpenView(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		view.Close()
		s.Stop()
	})
	return s, view
}

// viewPath is a path as the VMM sees it, through its view.
func viewPath(view *os.File, rel string) string {
	return filepath.Join("/proc/self/fd", strconv.Itoa(int(view.Fd())), rel)
}

// nsMountinfo is the mount table of the share's namespace.
func nsMountinfo(t *testing.T, s *Share) string {
	t.Helper()
	ns, err := s.Namespace(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	out := make(chan string, 1)
	confine.GoLocked(func() {
		if unix.Unshare(unix.CLONE_FS) != nil || unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS) != nil {
			out <- ""
			return
		}
		b, _ := os.ReadFile("/proc/thread-self/mountinfo")
		out <- string(b)
	})
	mi := <-out
	if mi == "" {
		t.Fatal("could not read the share's mount table")
	}
	return mi
}

func TestAttachFlagsInVMMsView(t *testing.T) {
	s, view := startShare(t)
	ctx := context.Background()
	host := t.TempDir()
	for _, d := range []string{"ro", "rw", "rro", "ro/sub", "rro/sub"} {
		if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Submounts below two of the sources, made before the attach.
	for _, d := range []string{"ro/sub", "rro/sub"} {
		if err := unix.Mount("tmpfs", filepath.Join(host, d), "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(filepath.Join(host, d), unix.MNT_DETACH) })
	}
	file := filepath.Join(host, "hosts")
	os.WriteFile(file, []byte("127.0.0.1 localhost\n"), 0o644)
	for _, a := range []Attachment{
		{Source: filepath.Join(host, "ro"), Target: "c1/mounts/0/ro", ReadOnly: true},
		{Source: filepath.Join(host, "rw"), Target: "c1/mounts/1/rw"},
		{Source: filepath.Join(host, "rro"), Target: "c1/mounts/2/rro", ReadOnly: true, Recursive: true},
		{Source: file, Target: "c1/mounts/3/hosts", ReadOnly: true},
	} {
		if err := s.Attach(ctx, a); err != nil {
			t.Fatalf("attach %s: %v", a.Target, err)
		}
	}
	writable := map[string]bool{
		"":                        false, // the share's root
		"c1":                      false, // the host's own directories
		"c1/mounts/0":             false,
		"c1/mounts/0/ro":          false,
		"c1/mounts/0/ro/sub":      true, // "ro" is not recursive
		"c1/mounts/1/rw":          true,
		"c1/mounts/2/rro":         false,
		"c1/mounts/2/rro/sub":     false,
		"c1/mounts/3/hosts.probe": false,
	}
	for rel, want := range writable {
		p := viewPath(view, rel)
		err := os.WriteFile(filepath.Join(p, "probe"), []byte("x"), 0o644)
		if rel == "c1/mounts/3/hosts.probe" {
			err = os.WriteFile(strings.TrimSuffix(p, ".probe"), []byte("x"), 0o644)
		}
		if got := err == nil; got != want {
			t.Errorf("write below %q: err %v, want writable=%v", rel, err, want)
		}
		if err != nil && !errors.Is(err, unix.EROFS) {
			t.Errorf("write below %q: %v, want EROFS", rel, err)
		}
	}
	// Every attachment is nosuid and nodev in the guest's view.
	mi := nsMountinfo(t, s)
	seen := 0
	for _, l := range strings.Split(mi, "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[4], filepath.Join(s.Path(), sharedDir, "c1")+"/") {
			continue
		}
		seen++
		if opts := "," + f[5] + ","; !strings.Contains(opts, ",nosuid,") || !strings.Contains(opts, ",nodev,") {
			t.Errorf("attachment %s has options %s, want nosuid,nodev", f[4], f[5])
		}
	}
	if seen < 6 { // 4 attachments, 2 submounts
		t.Errorf("the view holds %d attachments, want 6:\n%s", seen, mi)
	}
	if b, _ := os.ReadFile(file); string(b) != "127.0.0.1 localhost\n" {
		t.Errorf("host file changed: %q", b)
	}
	// Nothing of the share is mounted in the host's namespace.
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(b), s.dir) {
		t.Errorf("share mounts visible on the host:\n%s", b)
	}
	// The host can take a submount away and remove its directory while it
	// is attached (no EBUSY: the share's copy is in another namespace).
	if err := unix.Unmount(filepath.Join(host, "ro/sub"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(host, "ro/sub")); err != nil {
		t.Errorf("remove an attached submount's directory on the host: %v", err)
	}
	// Detach, then remove the container's tree.
	for _, tgt := range []string{"c1/mounts/3/hosts", "c1/mounts/2/rro", "c1/mounts/1/rw", "c1/mounts/0/ro"} {
		if err := s.Detach(ctx, tgt); err != nil {
			t.Errorf("detach %s: %v", tgt, err)
		}
	}
	if err := s.Remove(ctx, "c1"); err != nil {
		t.Errorf("remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(host, "rw", "probe")); err != nil {
		t.Errorf("a write to the rw volume did not reach the host: %v", err)
	}
	if _, err := os.Lstat(viewPath(view, "c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("c1 still in the share: %v", err)
	}
}

func TestRemoveDoesNotEnterAttachments(t *testing.T) {
	s, _ := startShare(t)
	ctx := context.Background()
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "keep"), []byte("x"), 0o644)
	if err := s.Attach(ctx, Attachment{Source: host, Target: "c1/rootfs"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "c1"); !errors.Is(err, unix.EXDEV) {
		t.Errorf("remove of a tree with an attachment: %v, want EXDEV", err)
	}
	if _, err := os.Stat(filepath.Join(host, "keep")); err != nil {
		t.Errorf("remove reached into the attachment: %v", err)
	}
	for _, bad := range []string{"../x", "/abs", "a/../../b", "", "."} {
		if err := s.Attach(ctx, Attachment{Source: host, Target: bad}); err == nil {
			t.Errorf("attach at %q accepted", bad)
		}
	}
}

// threadsSeeing counts this process's threads in whose mount table a
// mount below dir is.
func threadsSeeing(t *testing.T, dir string) int {
	t.Helper()
	tables, _ := filepath.Glob("/proc/self/task/*/mountinfo")
	n := 0
	for _, p := range tables {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), " "+dir+"/") {
			n++
		}
	}
	return n
}

func TestStopLeavesNothing(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "share")
	s, err := Start(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	if err := s.Attach(context.Background(), Attachment{Source: src, Target: "c/rootfs"}); err != nil {
		t.Fatal(err)
	}
	if n := threadsSeeing(t, dir); n != 1 {
		t.Fatalf("%d threads of this process see the share's mounts, want its namespace thread", n)
	}
	s.Stop()
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left: %v", dir, err)
	}
	// The namespace is gone with its thread, and its mounts with it.
	if n := threadsSeeing(t, dir); n != 0 {
		t.Errorf("%d threads of this process still see the share's mounts after Stop", n)
	}
	if err := s.Attach(context.Background(), Attachment{Source: t.TempDir(), Target: "x"}); !errors.Is(err, ErrStopped) {
		t.Errorf("attach after stop: %v, want ErrStopped", err)
	}
	if _, err := Start(context.Background(), t.TempDir()); err == nil {
		t.Error("a share started in a directory that exists")
	}
}

// A share adopted by another owner (a pooled clone's, by the sandbox that
// takes the clone) attaches into the same namespace: what it attaches shows
// in the view the VMM opened from the first owner; its Stop leaves the
// share to its owner, whose Stop ends it.
func TestAdoptedShare(t *testing.T) {
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "share")
	owner, err := Start(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Stop()
	view, err := owner.OpenView(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	ns, err := owner.Namespace(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	adopted, err := Adopt(context.Background(), owner.Path(), ns)
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "hello"), []byte("from the adopter"), 0o644)
	if err := adopted.Attach(context.Background(), Attachment{Source: src, Target: "c1/rootfs", ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	through := filepath.Join("/proc/self/fd", strconv.Itoa(int(view.Fd())), "c1/rootfs/hello")
	if b, err := os.ReadFile(through); err != nil || string(b) != "from the adopter" {
		t.Fatalf("the VMM's view of an adopted attachment: %q, %v", b, err)
	}
	if err := os.WriteFile(through, []byte("x"), 0o644); err == nil {
		t.Error("a read-only attachment made by the adopter is writable in the VMM's view")
	}
	adopted.Stop()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the adopter's Stop removed the owner's share: %v", err)
	}
	if err := owner.Attach(context.Background(), Attachment{Source: src, Target: "c2/rootfs"}); err != nil {
		t.Fatalf("the owner's share after the adopter let go: %v", err)
	}
	if _, err := Adopt(context.Background(), t.TempDir(), mustOpen(t, "/proc/self/ns/mnt")); err == nil {
		t.Error("adopted a directory that is no share")
	}
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
