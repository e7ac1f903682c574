package sharefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/confine"
)

// Layout of a share, in its state directory:
//
//	stage/   a tmpfs (nosuid, nodev, noexec), shared propagation: the host
//	         makes directories here and attaches rootfs and volumes on them
//	shared/  a read-only bind of stage/ in stage's peer group, so every
//	         attachment appears here too, with its own flags: the VMM
//	         serves this (OpenView), the guest can write nothing but what
//	         is attached read-write
//
// Both mounts exist only in the share's mount namespace: one OS thread of
// this process unshares it (slave of the host's, so nothing made in it
// propagates back), makes the mounts and then runs every later attach and
// detach; the VMM reaches the view through a descriptor opened there. On
// the host both directories stay empty; no host mount is made, so nothing
// pins a host directory and a dead owner leaves no mount behind: the
// namespace ends with its thread and the VMM's descriptor.
//
// An attachment is made read-only before it is visible anywhere: the
// source is cloned with open_tree in the host's namespace, its flags are set
// on the detached clone with mount_setattr, then it is moved onto its target
// with move_mount. Targets are created and opened below stage/ with openat2
// (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV) and mounted on
// by file descriptor; unmounts use UMOUNT_NOFOLLOW.
const (
	stageDir  = "stage"
	sharedDir = "shared"
)

// Share is one sandbox's shared directory.
type Share struct {
	dir   string
	stage int // O_PATH descriptor of stage/, used on the namespace thread

	// adopted: the namespace and directory are another process's (Adopt).
	adopted bool

	reqs chan func()   // run on the namespace thread
	quit chan struct{} // closed by Stop: the namespace thread ends
	done chan struct{} // closed when the namespace thread has ended
	once sync.Once
}

// Start makes a share in dir (its state directory, created here; it must
// not exist): its namespace and mounts. The VMM serves its view
// (OpenView). On error nothing is left.
func Start(ctx context.Context, dir string) (*Share, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("share: %w", err)
	}
	s := newShare(dir, false)
	if err := s.run(ctx, s.setup); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func newShare(dir string, adopted bool) *Share {
	return &Share{dir: dir, stage: -1, adopted: adopted, reqs: make(chan func()), quit: make(chan struct{}), done: make(chan struct{})}
}

// run starts the share's namespace thread, which sets the share up
// (setup, whose failure its end undoes) and then runs requests until
// Stop. On error the thread has ended.
func (s *Share) run(ctx context.Context, setup func() error) error {
	started := make(chan error, 1)
	confine.GoLocked(func() {
		// Never unlocked: the thread ends with the goroutine, and with it
		// its hold on the namespace.
		defer close(s.done)
		if err := setup(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.serveRequests()
	})
	select {
	case err := <-started:
		if err != nil {
			<-s.done
		}
		return err
	case <-ctx.Done():
		s.Stop()
		return ctx.Err()
	}
}

// serveRequests runs requests on the namespace thread until Stop, then
// closes the stage's descriptor.
func (s *Share) serveRequests() {
	for {
		select {
		case fn := <-s.reqs:
			fn()
		case <-s.quit:
			unix.Close(s.stage)
			return
		}
	}
}

// setup runs on the namespace thread; on error the thread's end undoes
// it.
func (s *Share) setup() error {
	stage, shared := filepath.Join(s.dir, stageDir), filepath.Join(s.dir, sharedDir)
	for _, d := range []string{stage, shared} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("share: %w", err)
		}
	}
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("share: new mount namespace: %w", err)
	}
	steps := []struct {
		what                 string
		src, dst, fstype, do string
		flags                uintptr
	}{
		{"keep the namespace from propagating to the host", "", "/", "", "", unix.MS_REC | unix.MS_SLAVE},
		{"mount the share's tmpfs", "lodge-share", stage, "tmpfs", "mode=0711,size=1m,nr_inodes=16384", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"make the stage shared", "", stage, "", "", unix.MS_SHARED},
		{"bind the guest's view", stage, shared, "", "", unix.MS_BIND},
		{"make the guest's view read-only", "", shared, "", "", unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	}
	for _, st := range steps {
		if err := unix.Mount(st.src, st.dst, st.fstype, st.flags, st.do); err != nil {
			return fmt.Errorf("share: %s: %w", st.what, err)
		}
	}
	fd, err := unix.Open(stage, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("share: %w", err)
	}
	s.stage = fd
	return nil
}

// do runs fn on the namespace thread.
func (s *Share) do(ctx context.Context, fn func() error) error {
	errc := make(chan error, 1)
	select {
	case s.reqs <- func() { errc <- fn() }:
		return <-errc
	case <-s.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OpenView opens the guest's view of the share as an O_PATH descriptor,
// for the VMM that serves it (9p): through it the VMM sees the share's namespace, attachments made
// later included, without joining that namespace.
func (s *Share) OpenView(ctx context.Context) (*os.File, error) {
	var fd int
	err := s.do(ctx, func() (err error) {
		fd, err = unix.Open(filepath.Join(s.dir, sharedDir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("share: open the guest's view: %w", err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(s.dir, sharedDir)), nil
}

// Stop ends the share's namespace (which takes every
// attachment with it) and removes the share's directory. An adopted share
// only lets go of the namespace: it ends with its owner's.
func (s *Share) Stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
	if !s.adopted {
		os.RemoveAll(s.dir)
	}
}

// Namespace opens the share's mount namespace, for another process to
// adopt the share (Adopt): a pooled clone's keeper hands it over.
func (s *Share) Namespace(ctx context.Context) (*os.File, error) {
	var fd int
	err := s.do(ctx, func() (err error) {
		fd, err = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("share: open its namespace: %w", err)
	}
	return os.NewFile(uintptr(fd), "share-mnt-ns"), nil
}

// Path is the share's directory (its stage and the guest's view, in its
// namespace).
func (s *Share) Path() string { return s.dir }

// Adopt serves, from this process, a share another process made (dir, as
// Path tells it) and keeps (ns, its mount namespace, as Namespace opens
// it): a sandbox that takes a pooled clone attaches its containers' files
// to the clone's share this way. The share lives as long as its owner
// keeps it; Stop lets go of it here.
func Adopt(ctx context.Context, dir string, ns *os.File) (*Share, error) {
	s := newShare(dir, true)
	err := s.run(ctx, func() error {
		err := unix.Unshare(unix.CLONE_FS)
		if err == nil {
			err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS)
		}
		if err == nil {
			s.stage, err = unix.Open(filepath.Join(dir, stageDir), unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err == nil {
			var st unix.Statfs_t
			if err = unix.Fstatfs(s.stage, &st); err == nil && st.Type != unix.TMPFS_MAGIC {
				err = fmt.Errorf("%s is not a share's stage", filepath.Join(dir, stageDir))
			}
		}
		if err != nil {
			if s.stage >= 0 {
				unix.Close(s.stage)
			}
			return fmt.Errorf("share: adopt %s: %w", dir, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Attachment is a host path to make visible below the share.
type Attachment struct {
	// Source is a host directory or file, resolved in the host's mount
	// namespace (it comes from the spec or containerd, never the guest).
	Source string
	// Target is the path below the share: relative, clean, no "..".
	Target string
	// ReadOnly makes the attached mount read-only; with Recursive its
	// submounts too (the OCI "rro"), else they keep their flags ("ro").
	ReadOnly, Recursive bool
}

// Attach clones the source (with its submounts), makes the clone nosuid,
// nodev, a slave of the source (host mounts below it still arrive, nothing
// goes back) and read-only as asked, then mounts it on its target.
func (s *Share) Attach(ctx context.Context, a Attachment) error {
	if err := validTarget(a.Target); err != nil {
		return err
	}
	// This goroutine's thread is in the host's namespace: only the share's
	// own thread left it.
	fd, err := unix.OpenTree(unix.AT_FDCWD, a.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("share: clone %s: %w", a.Source, kernelHint(err))
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("share: %s: %w", a.Source, err)
	}
	attrs := []struct {
		attr  unix.MountAttr
		flags uint
	}{
		{unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Propagation: unix.MS_SLAVE}, unix.AT_RECURSIVE},
	}
	if a.ReadOnly {
		var rec uint
		if a.Recursive {
			rec = unix.AT_RECURSIVE
		}
		attrs = append(attrs, struct {
			attr  unix.MountAttr
			flags uint
		}{unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}, rec})
	}
	for _, at := range attrs {
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|at.flags, &at.attr); err != nil {
			return fmt.Errorf("share: set flags of %s: %w", a.Source, kernelHint(err))
		}
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	return s.do(ctx, func() error { return s.place(fd, a.Target, isDir) })
}

// place mounts the detached tree fd on a new target below stage.
func (s *Share) place(fd int, target string, isDir bool) error {
	parent, err := mkdirAll(s.stage, filepath.Dir(target))
	if err != nil {
		return fmt.Errorf("share: %s: %w", target, err)
	}
	defer unix.Close(parent)
	base := filepath.Base(target)
	var tfd int
	if isDir {
		if err := unix.Mkdirat(parent, base, 0o755); err != nil {
			return fmt.Errorf("share: %s: %w", target, err)
		}
		tfd, err = openBeneath(parent, base, unix.O_PATH|unix.O_DIRECTORY)
	} else {
		tfd, err = unix.Openat2(parent, base, &unix.OpenHow{
			Flags: unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY | unix.O_CLOEXEC, Mode: 0o644, Resolve: resolveFlags})
	}
	if err != nil {
		return fmt.Errorf("share: %s: %w", target, err)
	}
	defer unix.Close(tfd)
	if err := unix.MoveMount(fd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("share: attach %s: %w", target, err)
	}
	return nil
}

// Detach unmounts what is attached at target (and its submounts); a target
// with nothing attached is fine.
func (s *Share) Detach(ctx context.Context, target string) error {
	return s.inParent(ctx, "detach", target, func(parent int, base string) error {
		// The parent is reached through its descriptor, the last component
		// is not followed.
		p := fmt.Sprintf("/proc/thread-self/fd/%d/%s", parent, base)
		err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	})
}

// Remove deletes target's directory tree below stage. It never enters an
// attached mount: a tree that still holds one fails with EXDEV.
func (s *Share) Remove(ctx context.Context, target string) error {
	return s.inParent(ctx, "remove", target, removeTree)
}

// inParent runs fn in the share's namespace with target's parent opened
// beneath stage and target's last component; a parent that does not exist
// means there is nothing to do.
func (s *Share) inParent(ctx context.Context, op, target string, fn func(parent int, base string) error) error {
	if err := validTarget(target); err != nil {
		return err
	}
	return s.do(ctx, func() error {
		parent, err := openBeneath(s.stage, filepath.Dir(target), unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err == nil {
			defer unix.Close(parent)
			err = fn(parent, filepath.Base(target))
		}
		if err != nil {
			return fmt.Errorf("share: %s %s: %w", op, target, err)
		}
		return nil
	})
}

// validTarget accepts a clean relative path without "..".
func validTarget(t string) error {
	if t == "" || filepath.IsAbs(t) || filepath.Clean(t) != t || t == "." ||
		t == ".." || strings.HasPrefix(t, "../") || strings.Contains(t, "\x00") {
		return fmt.Errorf("share: invalid target %q", t)
	}
	return nil
}

// kernelHint names the kernel feature behind ENOSYS.
func kernelHint(err error) error {
	if errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w (open_tree, mount_setattr and move_mount need Linux 5.12 or later)", err)
	}
	return err
}
