package confine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Jail is the file system a confined program sees: a mount namespace of
// its own whose root is an empty tmpfs holding only what is listed, each
// at its host path, so the program's command line stays as it is. The
// system's /usr (its libraries and firmware, read-only) and a /proc of its
// own are always there; the rest of the host (other sandboxes' state,
// /etc, /root, /var, /home, the host's devices) is not. As Firecracker's
// jailer chroots the VMM, but without copying anything in.
type Jail struct {
	// Root is an empty directory on the host where the jail's root is
	// mounted (in the new namespace only: on the host it stays empty).
	Root string
	// ReadOnly and Writable are host files and directories the program
	// may read, or read and write.
	ReadOnly, Writable []string
	// Devices are device nodes the program may open besides baseDevices,
	// which are always there: the host's nodes, as the host's owner, group
	// and mode allow.
	Devices []string
	// OwnDevices are device nodes made anew in the jail, of the type and
	// number of the host's node at the same path, owned by Owner (uid and
	// gid) with mode 0600, as Firecracker's jailer makes /dev/kvm in its
	// chroot: the program opens them as their owner, whatever group and
	// mode the host gives its node (a /dev/kvm of root's alone, 0600, is
	// common where no udev rule gives it to group kvm), and needs no group
	// of the host's.
	OwnDevices []string
	// Owner is the host uid and gid that own OwnDevices.
	Owner int
	// Replace mounts host files (values) read-only over files the jail
	// already shows (keys), such as a program's own binary: the program
	// keeps its path, and what it finds relative to it.
	Replace map[string]string
}

// noGroup is a group no process is in.
const noGroup = 2147483646

// baseDevices are the nodes every program expects.
var baseDevices = []string{"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"}

// Enter moves the calling thread into a new mount namespace whose root is
// the jail. Run it on a thread that ends with what it starts (Start's
// setup), before capabilities are dropped: it mounts.
func (j Jail) Enter() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("jail: new mount namespace: %w", err)
	}
	// Nothing done here reaches the host's mount table.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("jail: make / a slave: %w", err)
	}
	if err := unix.Mount("lodge-jail", j.Root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("jail: mount its root on %s: %w", j.Root, err)
	}
	// The system's programs and libraries: the merged-/usr links of the
	// host as they are (/lib -> usr/lib), or, where they are directories
	// of their own, read-only binds of them.
	ro := []string{"/usr", "/etc/ld.so.cache"}
	for _, l := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		if target, err := os.Readlink(l); err == nil {
			if err := os.Symlink(target, filepath.Join(j.Root, l)); err != nil {
				return fmt.Errorf("jail: link %s: %w", l, err)
			}
		} else {
			ro = append(ro, l)
		}
	}
	ro = append(ro, j.ReadOnly...)
	for _, p := range ro {
		if err := j.bind(p, true); err != nil {
			return err
		}
	}
	for _, p := range j.Writable {
		if err := j.bind(p, false); err != nil {
			return err
		}
	}
	for dst, src := range j.Replace {
		target := filepath.Join(j.Root, dst)
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("jail: put %s at %s: %w", src, dst, err)
		}
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("jail: remount %s: %w", dst, err)
		}
	}
	if len(j.OwnDevices) > 0 {
		if err := j.makeDevices(); err != nil {
			return err
		}
	}
	for _, d := range append(append([]string{}, baseDevices...), j.Devices...) {
		if err := j.bindDevice(d); err != nil {
			return err
		}
	}
	if len(j.OwnDevices) > 0 {
		// Read-only once all are there (a device node still opens for
		// writing on a read-only mount).
		dev := filepath.Join(j.Root, "dev")
		if err := unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("jail: remount its /dev read-only: %w", err)
		}
	}
	procDir := filepath.Join(j.Root, "proc")
	if err := os.Mkdir(procDir, 0o555); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	// Processes only (subset=pid): no /proc/sys, whose root-owned files
	// uid 0 may write without any capability (kernel.core_pattern names a
	// program the kernel runs as full root), no /proc/sysrq-trigger. Of
	// those, only the ones the program could trace (hidepid=invisible):
	// itself, for its /proc/self, and no other sandbox's or host process.
	// Members of the gid= group would see every process: by default that
	// is group 0, which the program is in.
	opts := fmt.Sprintf("subset=pid,hidepid=invisible,gid=%d", noGroup)
	if err := unix.Mount("proc", procDir, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("jail: mount /proc: %w", err)
	}
	// The jail's root becomes the thread's; the old root goes.
	old := filepath.Join(j.Root, ".old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := unix.PivotRoot(j.Root, old); err != nil {
		return fmt.Errorf("jail: pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("jail: detach the host's root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	// Nothing may be created in the root itself from now on.
	return unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
}

// bind mounts host path p at the same path in the jail, read-only if ro.
// A path that does not exist is skipped: the program reports it, as it
// would outside the jail.
func (j Jail) bind(p string, ro bool) error {
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	target := filepath.Join(j.Root, p)
	if err := mountpoint(target, st.IsDir()); err != nil {
		return err
	}
	// Not recursive: mounts below a listed path stay out.
	if err := unix.Mount(p, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("jail: bind %s: %w", p, err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("jail: remount %s: %w", p, err)
	}
	return nil
}

// bindDevice makes the device node d usable in the jail (the jail's other
// mounts are nodev).
func (j Jail) bindDevice(d string) error {
	if _, err := os.Stat(d); err != nil {
		return nil // absent on this host: the program says so if it needs it
	}
	target := filepath.Join(j.Root, d)
	if err := mountpoint(target, false); err != nil {
		return err
	}
	if err := unix.Mount(d, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("jail: bind %s: %w", d, err)
	}
	return nil
}

// makeDevices makes OwnDevices in the jail, in a tmpfs of their own on
// /dev (the jail's root is nodev; this one is not, and Enter makes it
// read-only once the other devices are bound there, so nothing else is
// ever made in it). A host node that does not exist is skipped, as for
// Devices.
func (j Jail) makeDevices() error {
	dev := filepath.Join(j.Root, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	if err := unix.Mount("lodge-jail-dev", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("jail: mount its /dev: %w", err)
	}
	for _, d := range j.OwnDevices {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("jail: %s: %w", d, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR && st.Mode&unix.S_IFMT != unix.S_IFBLK || !strings.HasPrefix(d, "/dev/") {
			return fmt.Errorf("jail: %s is not a device node in /dev", d)
		}
		target := filepath.Join(j.Root, d)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
		if err := unix.Mknod(target, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return fmt.Errorf("jail: make %s: %w", d, err)
		}
		if err := unix.Chown(target, j.Owner, j.Owner); err != nil {
			return fmt.Errorf("jail: give %s to uid %d: %w", d, j.Owner, err)
		}
	}
	return nil
}

// mountpoint makes an empty directory or file at target, with its parents.
func mountpoint(target string, dir bool) error {
	if dir {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("jail: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("jail: %w", err)
	}
	return f.Close()
}
