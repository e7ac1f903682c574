package directinit

// The container's root: its mounts, /dev, pivot_root, and the read-only and
// masked paths after it (runc's prepareRootfs and finalizeRootfs).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/cyphar/filepath-securejoin/pathrs-lite/procfs"
	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// setupRoot makes the container's mounts and /dev in its root and makes
// the root the container's (pivot_root), as runc's prepareRootfs does.
func (in *Config) setupRoot() error {
	prop := unix.MS_SLAVE | unix.MS_REC
	if in.Propagation != 0 {
		prop = in.Propagation
	}
	if err := unix.Mount("", "/", "", uintptr(prop), ""); err != nil {
		return fmt.Errorf("root propagation: %w", err)
	}
	// pivot_root needs the root's parent mount not to be shared: with
	// the propagations planDirect allows (rslave, rprivate) none is.
	if err := unix.Mount(in.Root, in.Root, "bind", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the root: %w", err)
	}
	root, err := os.OpenFile(in.Root, unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_PATH, 0)
	if err != nil {
		return fmt.Errorf("open the root: %w", err)
	}
	defer root.Close()
	for _, m := range in.Mounts {
		if err := in.mount(root, m); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Source, m.Destination, err)
		}
	}
	if in.SetupDev {
		if err := in.setupDev(root); err != nil {
			return fmt.Errorf("container /dev: %w", err)
		}
	}
	if err := pivotInto(root); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if in.SetupDev {
		if err := reopenDevNull(); err != nil {
			return err
		}
	}
	if in.Cwd != "" {
		if err := os.MkdirAll(in.Cwd, 0o755); err != nil {
			return fmt.Errorf("cwd: %w", err)
		}
	}
	return nil
}

// mount makes one of the spec's mounts inside root: its mount point is
// found or made without leaving the root (a symlink in the image cannot
// point it elsewhere), and the mount is made on that very inode.
func (in *Config) mount(root *os.File, m *configs.Mount) error {
	dest := strings.TrimPrefix(filepath.Clean("/"+m.Destination), "/")
	if dest == "" {
		return errors.New("a mount on the root itself")
	}
	if m.Device == "proc" || m.Device == "sysfs" {
		// As runc: the image's own entry there must be a directory, not
		// a symlink that would point the mount elsewhere in the root
		// (CVE-2025-52881).
		if st, err := os.Lstat(filepath.Join(in.Root, dest)); err == nil && !st.IsDir() {
			return fmt.Errorf("filesystem %q must be mounted on ordinary directory", m.Device)
		}
	}
	dst, err := pathrs.OpenatInRoot(root, dest)
	existed := err == nil
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		file := false
		if m.IsBind() {
			st, err := os.Stat(m.Source)
			if err != nil {
				return err
			}
			file = !st.IsDir()
		}
		if dst, err = makeMountPoint(root, dest, file); err != nil {
			return fmt.Errorf("make mount point: %w", err)
		}
	default:
		return fmt.Errorf("look up mount point: %w", err)
	}
	defer dst.Close()
	real, err := procfs.ProcSelfFdReadlink(dst)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(in.Root, real)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("mount point %s is not inside the root", real)
	}
	if err := checkProcDest("/"+rel, m); err != nil {
		return err
	}
	flags, data, fstype := m.Flags, m.Data, m.Device
	switch m.Device {
	case "tmpfs":
		// A tmpfs keeps the mode of a mount point the root had, as runc's
		// does; it is
		// made writable, to fill /dev, and read-only in finishRoot.
		var st unix.Stat_t
		if existed && unix.Fstat(int(dst.Fd()), &st) == nil {
			data = strings.TrimSuffix(fmt.Sprintf("mode=%04o,%s", st.Mode&0o7777, data), ",")
		}
		flags &^= unix.MS_RDONLY
	case "cgroup":
		fstype = "cgroup2"
	case "bind":
		fstype = ""
	}
	if filepath.Clean("/"+m.Destination) == "/dev" {
		flags &^= unix.MS_RDONLY
	}
	target := fmt.Sprintf("/proc/self/fd/%d", dst.Fd())
	err = unix.Mount(m.Source, target, fstype, uintptr(flags), data)
	if err != nil && m.Device == "cgroup" && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY)) && in.Cgroup2Path != "" {
		err = unix.Mount(in.Cgroup2Path, target, "", uintptr(m.Flags|unix.MS_BIND), "")
	}
	if err != nil {
		return err
	}
	// The mount point's handle names the inode under the new mount.
	mounted, err := pathrs.OpenatInRoot(root, dest)
	if err != nil {
		return fmt.Errorf("reopen mount point: %w", err)
	}
	defer mounted.Close()
	target = fmt.Sprintf("/proc/self/fd/%d", mounted.Fd())
	if m.Device == "bind" && (m.Flags&^(unix.MS_BIND|unix.MS_REC|unix.MS_REMOUNT) != 0 || m.ClearedFlags != 0) {
		if err := remountBind(m.Source, target, m); err != nil {
			return err
		}
	}
	for _, p := range m.PropagationFlags {
		if err := unix.Mount("", target, "", uintptr(p), ""); err != nil {
			return fmt.Errorf("propagation: %w", err)
		}
	}
	return nil
}

// makeMountPoint makes dest inside root, a file or a directory, and opens
// it.
func makeMountPoint(root *os.File, dest string, file bool) (*os.File, error) {
	if !file {
		return pathrs.MkdirAllHandle(root, dest, 0o755)
	}
	dir, err := pathrs.MkdirAllHandle(root, filepath.Dir(dest), 0o755)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(int(dir.Fd()), filepath.Base(dest), unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	dir.Close()
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, err
	}
	if err == nil {
		unix.Close(fd)
	}
	return pathrs.OpenatInRoot(root, dest)
}

// remountBind gives a bind mount the flags its options ask for; where the
// kernel refuses (flags locked on the source mount), it keeps the locked
// ones, unless the options ask to clear them.
func remountBind(source, target string, m *configs.Mount) error {
	flags := uintptr(m.Flags | unix.MS_BIND | unix.MS_REMOUNT)
	err := unix.Mount("", target, "", flags, "")
	if err == nil {
		return nil
	}
	var st unix.Statfs_t
	if serr := unix.Statfs(source, &st); serr != nil {
		return fmt.Errorf("remount: %w", err)
	}
	const locked = unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NOATIME |
		unix.MS_NODIRATIME | unix.MS_RELATIME
	src := int(st.Flags) & locked
	if src&m.ClearedFlags != 0 {
		return fmt.Errorf("remount: cannot clear locked flags %#x: %w", src&m.ClearedFlags, err)
	}
	if rerr := unix.Mount("", target, "", flags|uintptr(src), ""); rerr != nil {
		return fmt.Errorf("remount with the source's locked flags: %w", rerr)
	}
	return nil
}

// checkProcDest refuses what runc refuses: a mount on /proc that is not a
// procfs, or one inside /proc but for the files LXCFS-like tools cover.
func checkProcDest(dest string, m *configs.Mount) error {
	rel, err := filepath.Rel("/proc", dest)
	if err != nil || strings.HasPrefix(rel, "..") {
		return nil
	}
	if rel == "." {
		if m.Device == "proc" {
			return nil
		}
		return fmt.Errorf("%q cannot be mounted because it is not of type proc", dest)
	}
	switch dest {
	case "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
		"/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/sys/kernel/ns_last_pid",
		"/proc/sys/crypto/fips_enabled":
		return nil
	}
	return fmt.Errorf("%q cannot be mounted because it is inside /proc", dest)
}

// setupDev makes the spec's device nodes, /dev/ptmx and the /dev links.
func (in *Config) setupDev(root *os.File) error {
	// Each directory is found (or made) inside the root once: the nodes
	// are mostly in /dev, and every safe lookup is a few system calls.
	dirs := map[string]*os.File{}
	defer func() {
		for _, d := range dirs {
			d.Close()
		}
	}()
	dirOf := func(rel string) (*os.File, error) {
		if d, ok := dirs[rel]; ok {
			return d, nil
		}
		d, err := pathrs.MkdirAllHandle(root, rel, 0o755)
		if err == nil {
			dirs[rel] = d
		}
		return d, err
	}
	for _, d := range in.Devices {
		p := filepath.Clean("/" + d.Path)
		if p == "/dev/ptmx" || d.Path == "" {
			continue
		}
		dir, err := dirOf(filepath.Dir(strings.TrimPrefix(p, "/")))
		if err != nil {
			return fmt.Errorf("device %s: %w", p, err)
		}
		if err := mknodIn(dir, p, d); err != nil {
			return err
		}
	}
	dev, err := dirOf("dev")
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(int(dev.Fd()), "ptmx", 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	links := [][2]string{{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "core"})
	}
	for _, l := range links {
		if err := unix.Symlinkat(l[0], int(dev.Fd()), l[1]); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("link /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

// mknodIn makes the device node p (its name) in dir, p's directory in the
// container's root.
func mknodIn(dir *os.File, p string, d *config.Device) error {
	mode := uint32(d.FileMode)
	switch d.Type {
	case config.BlockDevice:
		mode |= unix.S_IFBLK
	case config.CharDevice:
		mode |= unix.S_IFCHR
	case config.FifoDevice:
		mode |= unix.S_IFIFO
	default:
		return fmt.Errorf("device %s: type %c", p, d.Type)
	}
	dev, err := d.Mkdev()
	if err != nil {
		return err
	}
	name := filepath.Base(p)
	if err := unix.Mknodat(int(dir.Fd()), name, mode, int(dev)); err != nil {
		switch {
		case errors.Is(err, unix.EEXIST):
			return nil
		case errors.Is(err, unix.EPERM):
			// A root whose file system takes no device nodes (a 9p share
			// of a bundle's rootfs): bind the guest's own node, as runc
			// does where it cannot mknod.
			return bindDevice(dir, name, p)
		}
		return fmt.Errorf("mknod %s: %w", p, err)
	}
	if err := unix.Fchmodat(int(dir.Fd()), name, mode&0o7777, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	if err := unix.Fchownat(int(dir.Fd()), name, int(d.Uid), int(d.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	return nil
}

// bindDevice binds the guest's node p (this mount namespace still sees the
// agent's /dev) onto an empty file name in dir.
func bindDevice(dir *os.File, name, p string) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("device %s: %w", p, err)
	}
	defer unix.Close(fd)
	if err := unix.Mount(p, fmt.Sprintf("/proc/self/fd/%d", fd), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind device %s: %w", p, err)
	}
	return nil
}

// pivotInto makes root the root of the mount namespace and detaches the
// old one, as runc's pivotRoot.
func pivotInto(root *os.File) error {
	old, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(old)
	if err := unix.Fchdir(int(root.Fd())); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return err
	}
	if err := unix.Fchdir(old); err != nil {
		return err
	}
	// Nothing of the unmount may reach the agent's mounts.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return err
	}
	return unix.Chdir("/")
}

// reopenDevNull points stdio that is the agent's /dev/null at the
// container's.
func reopenDevNull() error {
	f, err := openDevNull(os.O_RDWR)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	for fd := 0; fd < 3; fd++ {
		if unix.Fstat(fd, &st) == nil && isDevNull(&st) {
			if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

func isDevNull(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && uint64(st.Rdev) == unix.Mkdev(1, 3)
}

// finishRoot does what runc does after the root is the container's:
// read-only tmpfs and /dev mounts and root, umask, hostname, read-only and
// masked paths.
func (in *Config) finishRoot() error {
	for _, m := range in.Mounts {
		if m.Flags&unix.MS_RDONLY == 0 {
			continue
		}
		if m.Device == "tmpfs" || filepath.Clean("/"+m.Destination) == "/dev" {
			if err := unix.Mount("", m.Destination, "", uintptr(m.Flags|unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY), ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", m.Destination, err)
			}
		}
	}
	if in.Readonlyfs {
		var st unix.Statfs_t
		if err := unix.Statfs("/", &st); err != nil {
			return err
		}
		keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOSYMFOLLOW)
		if err := unix.Mount("", "/", "", keep|unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	if in.Umask != nil {
		unix.Umask(int(*in.Umask))
	} else {
		unix.Umask(0o022)
	}
	if in.Hostname != "" {
		if err := unix.Sethostname([]byte(in.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	if in.Domainname != "" {
		if err := unix.Setdomainname([]byte(in.Domainname)); err != nil {
			return fmt.Errorf("setdomainname: %w", err)
		}
	}
	for _, p := range in.ROPaths {
		if err := readonlyPath(p); err != nil {
			return fmt.Errorf("read-only path %s: %w", p, err)
		}
	}
	if len(in.MaskPaths) == 0 {
		return nil
	}
	// Files are masked with the container's /dev/null, checked by its
	// descriptor to be the null device: an image's /dev/null that is a
	// symlink to a procfs file would otherwise be bound, writable, over
	// every masked file (CVE-2025-31133).
	null, err := openDevNull(unix.O_PATH)
	if err != nil {
		return err
	}
	defer null.Close()
	for _, p := range in.MaskPaths {
		if err := maskPath(p, null); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// openDevNull opens the container's /dev/null and checks it is the null
// device.
func openDevNull(flags int) (*os.File, error) {
	f, err := os.OpenFile("/dev/null", flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the container's /dev/null: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || !isDevNull(&st) {
		f.Close()
		return nil, errors.New("container's /dev/null is invalid")
	}
	return f, nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return err
	}
	flags := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	return unix.Mount(p, p, "", flags|unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
}

func maskPath(p string, null *os.File) error {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	target := fmt.Sprintf("/proc/self/fd/%d", fd)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
		if err != nil {
			err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY, "nr_blocks=1,nr_inodes=2")
		}
		return err
	}
	return unix.Mount(fmt.Sprintf("/proc/self/fd/%d", null.Fd()), target, "", unix.MS_BIND, "")
}
