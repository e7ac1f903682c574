package sharefs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needRoot skips tests that mount and start virtiofsd.
func needRoot(t *testing.T) *Virtiofsd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount namespaces, virtiofsd)")
	}
	v := &Virtiofsd{Binary: "/usr/lib/qemu/virtiofsd", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := v.Check(); err != nil {
		t.Skipf("no virtiofsd: %v (make setup installs it)", err)
	}
	return v
}

func startShare(t *testing.T, v *Virtiofsd) *Share {
	t.Helper()
	dir := t.TempDir()
	s, err := v.Start(context.Background(), Config{Dir: filepath.Join(dir, "share"),
		Socket: filepath.Join(dir, "fs.sock"), LogFile: filepath.Join(dir, "fs.log")})
	if err != nil {
		t.Fatal(err)
	}
	// virtiofsd sets its sandbox up once the VMM connects.
	conn, err := net.Dial("unix", filepath.Join(dir, "fs.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "fs.log"))
			t.Logf("virtiofsd log:\n%s", b)
		}
	})
	return s
}

// guestView is a path as virtiofsd sees it (its root is the served dir).
func guestView(t *testing.T, s *Share, rel string) string {
	t.Helper()
	p := filepath.Join("/proc", strconv.Itoa(s.PID()), "root", rel)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Lstat(p); err == nil {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: virtiofsd did not set its sandbox up within 10s", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAttachFlagsInVirtiofsdsView(t *testing.T) {
	v := needRoot(t)
	s := startShare(t, v)
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
	guestView(t, s, "c1/mounts/3/hosts") // virtiofsd has set its sandbox up (c1 is not on the host's /)
	for rel, want := range writable {
		p := filepath.Join("/proc", strconv.Itoa(s.PID()), "root", rel)
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
	// Every attachment is nosuid and nodev in virtiofsd's namespace.
	mi, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(s.PID()), "mountinfo"))
	seen := 0
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[4], "/c1/") {
			continue
		}
		seen++
		if opts := "," + f[5] + ","; !strings.Contains(opts, ",nosuid,") || !strings.Contains(opts, ",nodev,") {
			t.Errorf("attachment %s has options %s, want nosuid,nodev", f[4], f[5])
		}
	}
	if seen < 6 { // 4 attachments, 2 submounts
		t.Errorf("virtiofsd sees %d attachments, want 6:\n%s", seen, mi)
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
	if _, err := os.Lstat(filepath.Join("/proc", strconv.Itoa(s.PID()), "root", "c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("c1 still in the share: %v", err)
	}
}

func TestRemoveDoesNotEnterAttachments(t *testing.T) {
	v := needRoot(t)
	s := startShare(t, v)
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

func TestStopLeavesNothing(t *testing.T) {
	v := needRoot(t)
	dir := t.TempDir()
	s, err := v.Start(context.Background(), Config{Dir: filepath.Join(dir, "share"),
		Socket: filepath.Join(dir, "fs.sock"), LogFile: filepath.Join(dir, "fs.log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Attach(context.Background(), Attachment{Source: t.TempDir(), Target: "c/rootfs"}); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	s.Stop()
	if err := unix.Kill(pid, 0); err == nil {
		t.Errorf("virtiofsd %d still running", pid)
	}
	for _, p := range []string{filepath.Join(dir, "share"), filepath.Join(dir, "fs.sock")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	if err := s.Attach(context.Background(), Attachment{Source: dir, Target: "x"}); !errors.Is(err, ErrStopped) {
		t.Errorf("attach after stop: %v, want ErrStopped", err)
	}
}

// A share adopted by another owner (a pooled clone's, by the sandbox that
// takes the clone) attaches into the same namespace: what it attaches shows
// in the view the VMM opened from the first owner; its Stop leaves the
// share to its owner, whose Stop ends it.
func TestAdoptedShare(t *testing.T) {
	v := needRoot(t)
	dir := filepath.Join(t.TempDir(), "share")
	owner, err := v.Start(context.Background(), Config{Dir: dir}) // served by the VMM (9p)
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
