package boot

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ModulesList is the initrd file naming the modules to load, one path per
// line, in dependency order (written by internal/guestimage).
const ModulesList = "/lodge/modules.list"

// mount is one row of the PID 1 mount table.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// mounts are made, in order, after the switch to the tmpfs root.
var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
}

// Result reports what Setup did, for the agent's first log line.
type Result struct {
	Modules  int
	Duration time.Duration
}

// Setup prepares the guest. It must run as PID 1, before anything else.
func Setup(log *slog.Logger) (Result, error) {
	start := time.Now()
	n, err := loadModules(ModulesList)
	if err != nil {
		return Result{}, err
	}
	if err := switchRoot("/lodge-root"); err != nil {
		return Result{}, fmt.Errorf("switch to tmpfs root: %w", err)
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return Result{}, err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return Result{}, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}, {"pts/ptmx", "/dev/ptmx"}} {
		os.Remove(l[1])
		if err := os.Symlink(l[0], l[1]); err != nil {
			return Result{}, err
		}
	}
	// Let every controller reach the containers' cgroups.
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		var enable []string
		for _, c := range strings.Fields(string(b)) {
			enable = append(enable, "+"+c)
		}
		if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte(strings.Join(enable, " ")), 0); err != nil {
			log.Warn("enable cgroup controllers", "err", err)
		}
	}
	// The kernel runs modprobe for a module it lacks; the agent is it.
	if _, err := os.Stat(ModprobeList); err == nil {
		os.MkdirAll("/sbin", 0o755)
		if err := os.Symlink("/proc/1/exe", ModprobePath); err != nil {
			return Result{}, err
		}
		if err := os.WriteFile("/proc/sys/kernel/modprobe", []byte(ModprobePath), 0); err != nil {
			log.Warn("modprobe helper", "err", err)
		}
	}
	// lodge.preload=a,b: on-demand modules a template loads before its
	// snapshot, so that its clones do not pay for them (9p).
	if list, ok := KernelParam("lodge.preload"); ok {
		for _, name := range strings.Split(list, ",") {
			if err := LoadModule(name); err != nil {
				return Result{}, fmt.Errorf("preload %s: %w", name, err)
			}
			n++
		}
	}
	if limit, err := fenceContainers(); err != nil {
		log.Warn("containers not fenced below the guest's memory", "err", err)
	} else {
		log.Debug("containers fenced", "memory_max_mib", limit>>20)
	}
	if err := unix.Sethostname([]byte("lodge")); err != nil {
		log.Warn("set hostname", "err", err)
	}
	return Result{Modules: n, Duration: time.Since(start)}, nil
}

// loadModules loads every module named in list, in order. A missing list
// means a kernel with everything built in.
func loadModules(list string) (int, error) {
	f, err := os.Open(list)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		path := strings.TrimSpace(sc.Text())
		if path == "" {
			continue
		}
		if err := loadModule(path); err != nil {
			return n, err
		}
		n++
	}
	return n, sc.Err()
}

// sysModule is where the kernel lists the modules it has (a variable for
// tests).
var sysModule = "/sys/module"

// loadModule loads the module file at path, unless a module of its name is
// loaded already: the kernel finds a duplicate only after it has read the
// whole file, checked its signature and laid it out, which for ext4 under
// TCG takes tens of milliseconds (a clone asks for modules its template
// loaded).
func loadModule(path string) error {
	if moduleLive(path) {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// moduleLive says whether the module in the file at path is loaded: its
// name is the file's, without ".ko" and with "-" as "_", as the kernel
// names modules.
func moduleLive(path string) bool {
	name := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
	b, err := os.ReadFile(filepath.Join(sysModule, name, "initstate"))
	return err == nil && strings.TrimSpace(string(b)) == "live"
}

// switchRoot moves / to a fresh tmpfs: it frees the initramfs files the
// agent no longer needs and gives containers a root that pivot_root accepts.
// The running agent binary stays reachable through /proc/self/exe.
func switchRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		return err
	}
	// Keep lodge-init and the on-demand modules (see Modprobe); free the
	// rest of what the initramfs held (boot modules are loaded, /init is
	// running).
	if err := keepFromInitrd(dir); err != nil {
		return err
	}
	os.RemoveAll("/lodge")
	if err := os.Chdir(dir); err != nil {
		return err
	}
	if err := unix.Mount(dir, "/", "", unix.MS_MOVE, ""); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return os.Chdir("/")
}

// PowerOff ends the VM; QEMU exits when the guest powers off.
func PowerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
