package confine

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFilter runs the helpers' filter on a thread of its own and checks
// what it refuses.
func TestFilter(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o644)
	errc := make(chan map[string]error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the filtered thread ends with the goroutine
		if err := Thread(); err != nil {
			errc <- map[string]error{"install": err}
			return
		}
		res := map[string]error{}
		res["chmod 0755"] = unix.Chmod(plain, 0o755)
		res["chmod 04755"] = unix.Chmod(plain, 0o4755)
		res["fchmodat 02755"] = unix.Fchmodat(unix.AT_FDCWD, plain, 0o2755, 0)
		fd, err := unix.Open(plain, unix.O_RDONLY, 0)
		if err == nil {
			res["fchmod 06755"] = unix.Fchmod(fd, 0o6755)
			res["fsetxattr"] = unix.Fsetxattr(fd, "user.x", []byte("y"), 0)
			unix.Close(fd)
		}
		_, res["openat creat 04755"] = unix.Openat(unix.AT_FDCWD, filepath.Join(dir, "suid"), unix.O_CREAT|unix.O_WRONLY, 0o4755)
		nfd, err := unix.Openat(unix.AT_FDCWD, filepath.Join(dir, "ok"), unix.O_CREAT|unix.O_WRONLY, 0o644)
		res["openat creat 0644"] = err
		unix.Close(nfd)
		res["mknod chr"] = unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		res["mknodat blk"] = unix.Mknodat(unix.AT_FDCWD, filepath.Join(dir, "sda"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0)))
		res["mknod fifo"] = unix.Mknod(filepath.Join(dir, "fifo"), unix.S_IFIFO|0o600, 0)
		_, res["openat2"] = unix.Openat2(unix.AT_FDCWD, plain, &unix.OpenHow{Flags: unix.O_RDONLY})
		errc <- res
	}()
	res := <-errc
	if err := res["install"]; err != nil {
		t.Skipf("cannot install a seccomp filter here: %v", err)
	}
	want := map[string]error{
		"chmod 0755": nil, "chmod 04755": unix.EPERM, "fchmodat 02755": unix.EPERM, "fchmod 06755": unix.EPERM,
		"fsetxattr": unix.EPERM, "openat creat 04755": unix.EPERM, "openat creat 0644": nil,
		"mknod chr": unix.EPERM, "mknodat blk": unix.EPERM, "mknod fifo": nil, "openat2": unix.ENOSYS,
	}
	for k, w := range want {
		if got := res[k]; !errors.Is(got, w) && !(got == nil && w == nil) {
			t.Errorf("%s: %v, want %v", k, got, w)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "suid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("setuid file created: %v", err)
	}
	// This goroutine's thread has no filter.
	if err := unix.Chmod(plain, 0o4755); err != nil {
		t.Errorf("the filter reached another thread: %v", err)
	}
}
