package confine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GoLocked runs fn in a new goroutine locked to an OS thread that is not
// the process's main thread, and never unlocks it: fn changes the thread's
// namespaces, so the thread must end with fn (the Go runtime then discards
// it). The main thread is never used, because the runtime keeps it when
// its goroutine ends and /proc/self shows the main thread's namespaces.
func GoLocked(fn func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			fn()
			return
		}
		// Hold the main thread until fn's goroutine has a thread of its own.
		held := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(held)
			fn()
		}()
		<-held
		runtime.UnlockOSThread()
	}()
}

// Start starts cmd on a thread of its own under the filter of Thread,
// after setup (if not nil) has run on that thread; the thread waits for cmd
// and ends with it, so that cmd's Pdeathsig (which fires when the thread
// that started it ends) fires only when its owner process dies. wait
// yields cmd.Wait's result.
func Start(cmd *exec.Cmd, setup func() error) (wait <-chan error, err error) {
	started := make(chan error, 1)
	waited := make(chan error, 1)
	GoLocked(func() {
		if setup != nil {
			if err := setup(); err != nil {
				started <- err
				return
			}
		}
		if err := Thread(); err != nil {
			started <- err
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	})
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}

// StartConfined starts cmd the way Lodge starts QEMU: in jail (none if
// nil), as the first process of a PID namespace of its own (it can signal
// no other process, and kill(-1) reaches only itself), in empty network
// and IPC namespaces of its own (no host address, listening port or
// abstract socket to connect to, and no System V IPC object of the host's:
// what it serves comes as descriptors), with only keep in its bounding
// set, exec'd by a thread without effective capabilities (see
// ClearThreadCaps), under the filter of Thread. wait yields cmd.Wait's
// result.
func StartConfined(cmd *exec.Cmd, jail *Jail, keep []uintptr) (wait <-chan error, err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC
	// In a user namespace of its own (CLONE_NEWUSER), a program cannot
	// take a group the namespace does not map: it gets its groups (none,
	// for QEMU: its device nodes are its own, see Jail.OwnDevices) from the
	// thread instead, which takes them first (and so never passes on
	// root's own). The kernel gives every capability in a
	// user namespace to the processes of its owner, the user that created
	// it: the thread creates it as the program's own host user (its
	// effective uid, keeping its capabilities), not as root, lest any
	// process of uid 0 could trace the program.
	userns := cmd.SysProcAttr.Cloneflags&unix.CLONE_NEWUSER != 0
	var groups []uint32
	owner := -1
	if cred := cmd.SysProcAttr.Credential; cred != nil && userns {
		groups = append([]uint32{}, cred.Groups...)
		cred.Groups, cred.NoSetGroups = nil, true
		for _, m := range cmd.SysProcAttr.UidMappings {
			if uint32(m.ContainerID) <= cred.Uid && int64(cred.Uid) < int64(m.ContainerID)+int64(m.Size) {
				owner = m.HostID + int(cred.Uid) - m.ContainerID
			}
		}
		if owner < 0 {
			return nil, fmt.Errorf("the user namespace's uid map has no host id for uid %d", cred.Uid)
		}
	}
	return Start(cmd, func() error {
		if jail != nil {
			if err := jail.Enter(); err != nil {
				return err
			}
		}
		var extra []uint
		if userns {
			if err := threadGroups(groups); err != nil {
				return err
			}
			// Writing an id map that maps host uid 0 into the new user
			// namespace takes CAP_SETFCAP (Linux 5.12 on). The child's map
			// files are in the jail's /proc, which shows the thread, once
			// it changed its uid (which makes the process non-dumpable, and
			// so its child's files root's), only what it may trace, and
			// lets it write only its own files. The child drops them all
			// before exec, as it takes its own user there.
			extra = []uint{unix.CAP_SETFCAP, unix.CAP_SYS_PTRACE, unix.CAP_DAC_OVERRIDE}
		}
		if err := DropCaps(keep); err != nil {
			return err
		}
		if owner >= 0 {
			// Only the effective uid: the real and saved ones stay 0, so
			// the permitted set stays (ClearThreadCaps makes the effective
			// one again).
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(owner), ^uintptr(0)); e != 0 {
				return fmt.Errorf("take uid %d to own the user namespace: %w", owner, e)
			}
		}
		return ClearThreadCaps(extra...)
	})
}

// threadGroups sets the calling thread's supplementary groups (only its:
// the raw system call; Go's Setgroups changes every thread's).
func threadGroups(groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("set the thread's groups: %w", e)
	}
	return nil
}

// DropCaps removes every capability but keep from this thread's bounding
// set (and so from what a program it starts as root has after exec). Run
// it on a thread that ends with what it starts (Start's setup).
func DropCaps(keep []uintptr) error {
	for c := uintptr(0); c <= lastCap(); c++ {
		if slices.Contains(keep, c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && err != unix.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// lastCap is the kernel's highest capability number.
func lastCap() uintptr {
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return uintptr(n)
		}
	}
	return unix.CAP_LAST_CAP
}

// ClearThreadCaps empties the calling thread's effective (and
// inheritable) capabilities but CAP_SYS_ADMIN, which cloning a child into
// new namespaces needs, CAP_SETUID and CAP_SETGID, with which the child
// takes a user of its own (exec.Cmd's Credential), and CAP_KILL: a
// child's Pdeathsig is sent by its parent thread as that thread dies, with
// the thread's right to signal the child (another user's, with a
// Credential) checked; without it the signal is refused, and the child
// lives on unless another thread of the process, to which it was
// reparented, dies after it (measured: QEMU outlived a killed supervisor
// in 3 of 39 tries). None of them reads a file. Its permitted set stays,
// so that what a program it then starts as root gets is still its
// bounding set (under no_new_privs, a permitted set smaller than that
// would cap it). What changes is the exec itself, which now runs without
// CAP_DAC_OVERRIDE: starting an execute-only binary (mode 0111) that way
// makes the program non-dumpable, so that no other process without
// CAP_SYS_PTRACE (another sandbox's QEMU, also uid 0) can read or write
// its memory, environment or root through /proc. extra stay effective too.
func ClearThreadCaps(extra ...uint) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read the thread's capabilities: %w", err)
	}
	for i := range data {
		data[i].Effective, data[i].Inheritable = 0, 0
	}
	for _, c := range append([]uint{unix.CAP_SYS_ADMIN, unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_KILL}, extra...) {
		data[c/32].Effective |= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear the thread's capabilities: %w", err)
	}
	return nil
}

// ExecOnlyCopy returns a copy of the program at path that only its owner
// (root) can execute and nobody can read (mode 0111), kept in dir (made
// 0700) under a name keyed by the program's identity (device, inode,
// size, modification time), so that an upgraded program gets a new copy
// and older copies go. The copy keeps the program's base name (its
// process name).
func ExecOnlyCopy(path, dir string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	sys := st.Sys().(*syscall.Stat_t)
	key := fmt.Sprintf("%x-%x-%x-%x", sys.Dev, sys.Ino, st.Size(), st.ModTime().UnixNano())
	copyDir := filepath.Join(dir, key)
	target := filepath.Join(copyDir, filepath.Base(path))
	if c, err := os.Stat(target); err == nil && c.Mode().Perm() == 0o111 && c.Size() == st.Size() {
		return target, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// Copies of older programs go (a running process keeps its own).
	if old, err := os.ReadDir(dir); err == nil {
		for _, e := range old {
			if e.Name() != key && !strings.HasPrefix(e.Name(), ".") {
				os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
	}
	tmp, err := os.MkdirTemp(dir, ".copy-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(tmp, filepath.Base(path)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o700)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return "", err
	}
	if err := dst.Chmod(0o111); err != nil {
		dst.Close()
		return "", err
	}
	if err := dst.Close(); err != nil {
		return "", err
	}
	// Another start may have made the same copy meanwhile: either is good.
	if err := os.Rename(tmp, copyDir); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return "", err
	}
	return target, nil
}

// Limit sets resource limits of process pid, which runs as uid and gid.
// Lowering another user's limits takes CAP_SYS_RESOURCE, which a host
// may not give Lodge; a thread that takes the process's user for the
// purpose needs none. The thread ends with it.
func Limit(pid, uid, gid int, limits map[int]unix.Rlimit) error {
	errc := make(chan error, 1)
	GoLocked(func() {
		if uid != 0 {
			// This thread only (the raw system calls), and it ends here.
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
				errc <- fmt.Errorf("take gid %d: %w", gid, e)
				return
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
				errc <- fmt.Errorf("take uid %d: %w", uid, e)
				return
			}
		}
		var errs []error
		for res, lim := range limits {
			if err := unix.Prlimit(pid, res, &lim, nil); err != nil {
				errs = append(errs, fmt.Errorf("limit %d of process %d: %w", res, pid, err))
			}
		}
		errc <- errors.Join(errs...)
	})
	return <-errc
}
