// Package directinit is a direct container's first step (Main): lodge-init,
// a small static binary the agent starts in the container's namespaces and
// cgroup, which the agent made or joined before it started it (see
// internal/guest/agent/direct_linux.go). It does what
// libcontainer's `runc init` does for the specs a direct container serves,
// in the same order and with the same checks, but without nsexec's stages,
// libcontainer's sync protocol or a second Go program: under TCG every one
// of those is tens of milliseconds of emulated code per container. It
// imports none of the agent's RPC code, so that it starts in a fraction of
// the agent's time.
package directinit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/cyphar/filepath-securejoin/pathrs-lite/procfs"
	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/keys"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runc/libcontainer/utils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The first step's file descriptors, in the order of exec.Cmd.ExtraFiles.
const (
	ConfigFd  = 3 // Config as JSON; then a byte (or EOF) to go on
	ReportFd  = 4 // Ready once ready, or an error's text; closes at the exec
	ConsoleFd = 5 // a socket for the terminal's master, with a terminal
	MountNsFd = 6 // an exec's container's mount namespace
)

// Ready is what the first step reports once its container is set up and
// it waits to be started.
const Ready = 'R'

// Config is what a direct container's first step is told.
type Config struct {
	// Exec: a process joins a running container (its namespaces joined
	// by the agent), and nothing of the root is set up.
	Exec        bool
	ContainerID string
	Root        string // the root, in the agent's mount namespace
	Mounts      []*configs.Mount
	Devices     []*config.Device
	SetupDev    bool // /dev is not a bind mount: make its nodes and links
	MaskPaths   []string
	ROPaths     []string
	Readonlyfs  bool
	Propagation int    // of the root's mounts (MS_SLAVE|MS_REC by default)
	Cgroup2Path string // the container's cgroup, bound if cgroup2 cannot be mounted
	Hostname    string
	Domainname  string
	Loopback    bool // a new network namespace: bring lo up
	NoKeyring   bool
	Umask       *uint32
	OOMScoreAdj *int
	Seccomp     *configs.Seccomp

	Args, Env    []string
	Cwd          string
	UID, GID     int
	Groups       []int
	Caps         *configs.Capabilities
	NoNewPrivs   bool
	Rlimits      []configs.Rlimit
	Console      bool
	ConsoleSizeW uint16
	ConsoleSizeH uint16
}

// Main is a direct container's first step; it returns only on error,
// which it has also reported to the agent.
func Main() error {
	// Credentials, capabilities and the seccomp filter are the thread's:
	// the thread that sets them up is the one that executes the program.
	runtime.LockOSThread()
	// Until it executes the program (which makes it dumpable again), no
	// process of the container may open this one's /proc files: its root
	// and descriptors are the agent's (runc's nsexec does the same).
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	report := os.NewFile(ReportFd, "direct-report")
	fail := func(err error) error {
		fmt.Fprint(report, err)
		return err
	}
	var in Config
	// No buffering: what follows the config is the start, written later.
	cf := os.NewFile(ConfigFd, "direct-config")
	if err := json.NewDecoder(cf).Decode(&in); err != nil {
		return fail(fmt.Errorf("direct init: config: %w", err))
	}
	if len(in.Args) == 0 {
		return fail(errors.New("direct init: no program"))
	}
	var console *os.File
	if in.Console {
		console = os.NewFile(ConsoleFd, "direct-console")
	}
	if in.Exec {
		// The agent joined the container's other namespaces; the mount
		// namespace this thread joins itself (a process with threads
		// cannot, a thread that shares no file system state can).
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fail(fmt.Errorf("direct init: unshare CLONE_FS: %w", err))
		}
		if err := unix.Setns(MountNsFd, unix.CLONE_NEWNS); err != nil {
			return fail(fmt.Errorf("direct init: join the container's mount namespace: %w", err))
		}
		unix.Close(MountNsFd)
	}
	return fail(in.run(cf, report, console))
}

// run sets the container (or the process) up and executes the program; it
// returns only on error.
func (in *Config) run(start io.Reader, report io.Writer, console *os.File) error {
	unix.Umask(0)
	if !in.NoKeyring {
		// As runc: a session keyring of the container's own, so that no
		// container sees another's keys.
		id, err := keys.JoinSessionKeyring("_ses." + in.ContainerID)
		switch {
		case err == nil && !in.Exec:
			if err := keys.ModKeyringPerm(id, 0xffffffff, 0x80000); err != nil {
				return fmt.Errorf("session keyring: %w", err)
			}
		case err != nil && !errors.Is(err, unix.ENOSYS):
			return fmt.Errorf("session keyring: %w", err)
		}
	}
	if !in.Exec {
		if in.Loopback {
			if err := loopbackUp(); err != nil {
				return err
			}
		}
		if err := in.setupRoot(); err != nil {
			return err
		}
	}
	if in.Console {
		if err := in.setupConsole(console); err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
	}
	if !in.Exec {
		if err := in.finishRoot(); err != nil {
			return err
		}
	} else if in.Umask != nil {
		unix.Umask(int(*in.Umask))
	}
	if in.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*in.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	for _, rl := range in.Rlimits {
		if err := unix.Prlimit(0, rl.Type, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
			return fmt.Errorf("rlimit %d: %w", rl.Type, err)
		}
	}
	if in.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if in.Seccomp != nil && !in.NoNewPrivs {
		// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load
		// it before the capabilities go.
		if _, err := seccomp.InitSeccomp(in.Seccomp); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	}
	if err := in.finalizeProcess(); err != nil {
		return err
	}
	name, err := lookPath(in.Args[0], in.Env)
	if err != nil {
		return err
	}
	if in.Seccomp != nil && in.NoNewPrivs {
		if _, err := seccomp.InitSeccomp(in.Seccomp); err != nil {
			return fmt.Errorf("seccomp: %w", err)
		}
	}
	if err := utils.CloseExecFrom(3); err != nil {
		return err
	}
	if !in.Exec {
		// Created: wait to be started (or killed).
		if _, err := report.Write([]byte{Ready}); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(start, b[:]); err != nil {
			return fmt.Errorf("wait to be started: %w", err)
		}
	}
	return fmt.Errorf("exec %s: %w", in.Args[0], unix.Exec(name, in.Args, in.Env))
}

func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	return nil
}

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
	// pivot_root needs the root's parent mount to be private.
	if err := unix.Mount("", parentMount(in.Root), "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the root's parent mount private: %w", err)
	}
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

// parentMount is the mount point of the mount that holds dir.
func parentMount(dir string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "/"
	}
	defer f.Close()
	best := "/"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPoint(fields[4])
		if (mp == dir || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	return best
}

func unescapeMountPoint(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
	for _, d := range in.Devices {
		p := filepath.Clean("/" + d.Path)
		if p == "/dev/ptmx" || d.Path == "" {
			continue
		}
		if err := mknodInRoot(root, p, d); err != nil {
			return err
		}
	}
	dev, err := pathrs.MkdirAllHandle(root, "dev", 0o755)
	if err != nil {
		return err
	}
	defer dev.Close()
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

func mknodInRoot(root *os.File, p string, d *config.Device) error {
	dir, err := pathrs.MkdirAllHandle(root, filepath.Dir(strings.TrimPrefix(p, "/")), 0o755)
	if err != nil {
		return fmt.Errorf("device %s: %w", p, err)
	}
	defer dir.Close()
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

// setupConsole gives the process a new terminal from the container's
// devpts: the master goes to the agent, the peer becomes stdio and the
// controlling terminal (and /dev/console of a container's init).
func (in *Config) setupConsole(socket *os.File) error {
	defer socket.Close()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlockpt: %w", err)
	}
	peerFd, _, errno := unix.Syscall(unix.SYS_IOCTL, master.Fd(), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return fmt.Errorf("open the peer: %w", errno)
	}
	peer := os.NewFile(peerFd, "pty-peer")
	defer peer.Close()
	if in.ConsoleSizeW != 0 && in.ConsoleSizeH != 0 {
		ws := &unix.Winsize{Col: in.ConsoleSizeW, Row: in.ConsoleSizeH}
		if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws); err != nil {
			return err
		}
	}
	if !in.Exec {
		c, err := os.OpenFile("/dev/console", unix.O_NOFOLLOW|unix.O_CREAT|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return fmt.Errorf("create /dev/console: %w", err)
		}
		err = unix.Mount(fmt.Sprintf("/proc/self/fd/%d", peer.Fd()), fmt.Sprintf("/proc/self/fd/%d", c.Fd()), "", unix.MS_BIND, "")
		c.Close()
		if err != nil {
			return fmt.Errorf("mount /dev/console: %w", err)
		}
	}
	if err := utils.SendFile(socket, master); err != nil {
		return err
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(peer.Fd()), fd, 0); err != nil {
			return err
		}
	}
	return unix.IoctlSetInt(0, unix.TIOCSCTTY, 0)
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

// finalizeProcess takes the process's environment, capabilities, user
// and working directory, as runc's finalizeNamespace.
func (in *Config) finalizeProcess() error {
	chdirLater := false
	if in.Cwd != "" {
		if err := unix.Chdir(in.Cwd); err != nil {
			if !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("chdir to cwd %q: %w", in.Cwd, err)
			}
			chdirLater = true
		}
	}
	env, err := processEnv(in.Env, in.UID)
	if err != nil {
		return err
	}
	in.Env = env
	caps, err := capabilities.New(in.Caps)
	if err != nil {
		return err
	}
	if err := caps.ApplyBoundingSet(); err != nil {
		return fmt.Errorf("capability bounding set: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return err
	}
	if err := stdioToUser(in.UID); err != nil {
		return err
	}
	if err := unix.Setgroups(in.Groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := unix.Setgid(in.GID); err != nil {
		return fmt.Errorf("setgid %d: %w", in.GID, err)
	}
	if err := unix.Setuid(in.UID); err != nil {
		return fmt.Errorf("setuid %d: %w", in.UID, err)
	}
	if chdirLater {
		if err := unix.Chdir(in.Cwd); err != nil {
			return fmt.Errorf("chdir to cwd %q: %w", in.Cwd, err)
		}
	}
	if wd, err := unix.Getwd(); err != nil || !filepath.IsAbs(wd) {
		return errors.New("the working directory is outside the container's root")
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return err
	}
	if err := caps.ApplyCaps(); err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	return nil
}

// stdioToUser gives the process's user its stdio (pipes from the agent),
// as runc does, so that it can reopen them; /dev/null is left alone.
func stdioToUser(uid int) error {
	for fd := 0; fd < 3; fd++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("stdio %d: %w", fd, err)
		}
		if int(st.Uid) == uid || isDevNull(&st) {
			continue
		}
		if err := unix.Fchown(fd, uid, -1); err != nil && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("stdio %d: %w", fd, err)
		}
	}
	return nil
}

// processEnv checks env, drops duplicates (the last wins) and an empty
// HOME, and sets HOME from the root's /etc/passwd when env has none, as
// runc's prepareEnv.
func processEnv(env []string, uid int) ([]string, error) {
	out := make([]string, 0, len(env)+1)
	seen := map[string]bool{}
	home := false
	for i := len(env) - 1; i >= 0; i-- {
		kv := env[i]
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, errors.New("invalid environment variable: missing '='")
		case k == "":
			return nil, errors.New("invalid environment variable: name cannot be empty")
		case strings.IndexByte(kv, 0) >= 0:
			return nil, fmt.Errorf("invalid environment variable %q: contains nul byte (\\x00)", k)
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		if k == "HOME" {
			if v == "" {
				continue
			}
			home = true
		}
		out = append(out, kv)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if !home {
		out = append(out, "HOME="+userHome(uid))
	}
	return out, nil
}

// userHome is uid's home in the root's /etc/passwd, or "/".
func userHome(uid int) string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 6 && fields[2] == strconv.Itoa(uid) && fields[5] != "" {
			return fields[5]
		}
	}
	return "/"
}

// lookPath finds the program as exec.LookPath would with env's PATH.
func lookPath(arg0 string, env []string) (string, error) {
	if strings.Contains(arg0, "/") {
		if err := executable(arg0); err != nil {
			return "", fmt.Errorf("exec: %q: %w", arg0, err)
		}
		return arg0, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, arg0)
		if executable(p) == nil {
			if !filepath.IsAbs(p) {
				return "", fmt.Errorf("exec: %q: the program found in the current directory is not run", arg0)
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", arg0)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return os.ErrPermission
	}
	return nil
}
