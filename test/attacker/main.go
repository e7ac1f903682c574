// Command attacker is guest root's stand-in in Lodge's integration tests:
// built static, it runs inside a privileged container (all capabilities,
// no seccomp, no masked paths) and tries to change, through the sandbox's
// share (9p), host files it was not given. It prints one line per
// attempt ("op path: ok" or "op path: error"); the tests judge by the host's
// files, not by these lines.
//
//	attacker writes PATH...   remount each PATH read-write, then write,
//	                          create, mkdir, rename, unlink, chmod, chown,
//	                          setxattr, symlink, truncate in or on it
//	attacker share DIR        mount the share's tag again at DIR and plant
//	                          files, directories and symlinks everywhere in
//	                          it, and write to every file it finds
//	attacker guest-root DIR   leave the container for the guest's root mount
//	                          namespace (the container must share the guest's
//	                          PID namespace) and attack DIR there, the agent's
//	                          own mount of the share, as share does
//	attacker privs DIR        in a writable DIR: device nodes, setuid and
//	                          setgid files, a file capability
//	attacker plant-loop DIR   mount the share at DIR and plant symlinks and
//	                          directories in it until killed
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

const tag = "lodge-shared"

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: attacker writes|share|privs|plant-loop PATH...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "writes":
		for _, p := range os.Args[2:] {
			writes(p)
		}
	case "share":
		share(os.Args[2])
	case "guest-root":
		guestRoot(os.Args[2])
	case "privs":
		privs(os.Args[2])
	case "plant-loop":
		dir := os.Args[2]
		if !mountShare(dir) {
			// A clone's 9p tag takes one mount: plant in the agent's, from
			// the guest's root (the spec shares the guest's PID namespace).
			dir = "/proc/1/root/run/lodge/shares/lodge-shared"
		}
		for {
			plant(dir, 3, false)
			time.Sleep(5 * time.Millisecond)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func report(op, path string, err error) {
	if err == nil {
		fmt.Printf("%s %s: ok\n", op, path)
	} else {
		fmt.Printf("%s %s: %v\n", op, path, err)
	}
}

// writes tries every kind of change on path, first remounting it
// read-write (the bind and its superblock).
func writes(path string) {
	report("remount", path, unix.Mount("", path, "", unix.MS_REMOUNT|unix.MS_BIND, ""))
	report("remount-sb", path, unix.Mount("", path, "", unix.MS_REMOUNT, ""))
	st, err := os.Stat(path)
	if err != nil {
		report("stat", path, err)
		return
	}
	if !st.IsDir() {
		fileWrites(path)
		return
	}
	// Entries of this mount only: what is mounted below is attacked on
	// its own.
	var entries []os.DirEntry
	all, _ := os.ReadDir(path)
	for _, e := range all {
		if sameDevice(path, filepath.Join(path, e.Name())) {
			entries = append(entries, e)
		}
	}
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		if !e.IsDir() {
			fileWrites(p)
		}
	}
	report("create", path, os.WriteFile(filepath.Join(path, "created-by-guest"), []byte("x"), 0o644))
	report("mkdir", path, os.Mkdir(filepath.Join(path, "dir-by-guest"), 0o755))
	report("symlink", path, os.Symlink("/etc", filepath.Join(path, "link-by-guest")))
	report("mknod-fifo", path, unix.Mkfifo(filepath.Join(path, "fifo-by-guest"), 0o600))
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		report("rename", p, os.Rename(p, p+".renamed"))
		report("unlink", p, os.RemoveAll(p))
	}
}

func sameDevice(a, b string) bool {
	// The mount, not the device: binds from one 9p share (a clone's) all
	// carry its device number.
	var sa, sb unix.Statx_t
	return unix.Statx(unix.AT_FDCWD, a, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &sa) == nil &&
		unix.Statx(unix.AT_FDCWD, b, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &sb) == nil &&
		sa.Mnt_id == sb.Mnt_id
}

func fileWrites(p string) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString("written by guest\n")
		f.Close()
	}
	report("write", p, err)
	report("truncate", p, os.Truncate(p, 0))
	report("chmod", p, os.Chmod(p, 0o4777))
	report("chown", p, os.Lchown(p, 1, 1))
	report("setxattr", p, unix.Lsetxattr(p, "user.guest", []byte("x"), 0))
	report("utimes", p, os.Chtimes(p, time.Unix(0, 0), time.Unix(0, 0)))
}

func mountShare(dir string) bool {
	os.MkdirAll(dir, 0o755)
	err := unix.Mount(tag, dir, "9p", 0, "trans=virtio,version=9p2000.L")
	report("mount-share", dir, err)
	return err == nil
}

// share mounts the tag again (no read-only flag of the container's binds
// applies to this mount) and attacks everything reachable.
func share(dir string) {
	if mountShare(dir) {
		plant(dir, 5, true)
	}
}

// guestRoot joins the mount namespace of the guest's PID 1 (the agent)
// and attacks the share where the agent mounted it.
func guestRoot(dir string) {
	// PID 1's root is a chroot in its namespace: keep a handle on it.
	root, err := unix.Open("/proc/1/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		report("enter-guest-root", dir, err)
		os.Exit(1)
	}
	fd, err := unix.Open("/proc/1/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		runtime.LockOSThread()
		err = unix.Unshare(unix.CLONE_FS)
	}
	for _, step := range []func() error{
		func() error { return unix.Setns(fd, unix.CLONE_NEWNS) },
		func() error { return unix.Fchdir(root) },
		func() error { return unix.Chroot(".") },
	} {
		if err == nil {
			err = step()
		}
	}
	report("enter-guest-root", dir, err)
	if err != nil {
		os.Exit(1)
	}
	plant(dir, 5, true)
}

// plant creates a file, a directory and symlinks to host paths in every
// directory below dir (to depth), and with write also writes every file.
func plant(dir string, depth int, write bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		report("readdir", dir, err)
		return
	}
	report("plant-file", dir, os.WriteFile(filepath.Join(dir, "planted"), []byte("x"), 0o644))
	report("plant-dir", dir, os.Mkdir(filepath.Join(dir, "planted.d"), 0o755))
	report("plant-link", dir, os.Symlink("/etc", filepath.Join(dir, "planted.l")))
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir() && depth > 0:
			plant(p, depth-1, write)
		case e.IsDir():
		case write:
			fileWrites(p)
		}
		if !e.IsDir() || depth == 0 {
			continue
		}
		// Replace what the host attached or will attach on: a symlink
		// where a directory was.
		report("replace-with-link", p, os.Rename(p, p+".moved"))
	}
}

// privs writes what would carry privilege on the host.
func privs(dir string) {
	report("mknod-chr", dir, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	report("mknod-blk", dir, unix.Mknod(filepath.Join(dir, "sda"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))))
	p := filepath.Join(dir, "suid")
	report("create", p, os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755))
	report("chmod-suid", p, unix.Chmod(p, 0o4755))
	report("chmod-sgid", p, unix.Chmod(p, 0o2755))
	fd, err := unix.Open(filepath.Join(dir, "sgid"), unix.O_CREAT|unix.O_WRONLY, 0o2755)
	if err == nil {
		unix.Close(fd)
	}
	report("create-sgid", filepath.Join(dir, "sgid"), err)
	fd, err = unix.Open(filepath.Join(dir, "suid2"), unix.O_CREAT|unix.O_WRONLY, 0o4755)
	if err == nil {
		unix.Close(fd)
	}
	report("create-suid", filepath.Join(dir, "suid2"), err)
	// A VFS_CAP_REVISION_2 blob granting every capability, effective.
	capv2 := []byte{0x01, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}
	report("setcap", p, unix.Setxattr(p, "security.capability", capv2, 0))
	report("write", filepath.Join(dir, "ok"), os.WriteFile(filepath.Join(dir, "ok"), []byte("written by guest\n"), 0o644))
}
