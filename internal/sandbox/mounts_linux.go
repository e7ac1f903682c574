package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/hostmount"
)

// makeSharedDir creates dir as a mount point with shared propagation, so
// bind mounts made below it later also appear in virtiofsd's (slave) mount
// namespace.
// It is traversable by anyone (0711, not listable): a container's root in
// a user namespace maps to another uid and must reach its rootfs below.
func makeSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		unmount(dir)
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// bindMount mounts src on dst (created as a directory or an empty file,
// like src), read-only if asked.
func bindMount(src, dst string, readonly bool) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
		var f *os.File
		if f, err = os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if readonly {
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unmount(dst)
			return fmt.Errorf("make %s read-only: %w", dst, err)
		}
	}
	return nil
}

// unmount detaches the mount at path (and anything below it); a path that
// is not mounted is fine.
func unmount(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", path, err)
}

// mountsBelow lists the mount points strictly below dir, relative to it
// (at most 64: enough for volumes, bounded for the request).
func mountsBelow(dir string) []string {
	points, _ := hostmount.PointsBelow(dir, false)
	var out []string
	for _, p := range points {
		if rel, err := filepath.Rel(filepath.Clean(dir), p); err == nil && len(out) < 64 {
			out = append(out, rel)
		}
	}
	return out
}
