package agent

// A container's files: the sandbox's share (9p) mounted once,
// bind sources inside it, host submounts kept mounts of their own, and
// read-only device nodes on 9p.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// readonlyNodesAsBinds turns each of spec's read-only paths that is a
// device node, FIFO or socket in a root served over 9p into a read-only
// bind mount of itself. libcontainer makes a read-only path by binding it
// onto itself and reading the mount's flags with statfs, which 9p answers
// by opening the file on the host, where a device node is on a nodev
// mount (the share's) and a FIFO has no reader: the open, and so the
// container's start, fail ("statfs: permission denied", "no such device
// or address"; runtime-tools' linux_readonly_paths). A bind mount
// that names its flags needs no statfs. The node is found inside the root
// without leaving it (SecureJoin): a symlink in the image cannot point the
// bind at the guest's own files.
func readonlyNodesAsBinds(spec *specs.Spec, rootfs string) error {
	if spec.Linux == nil {
		return nil
	}
	var keep []string
	for _, p := range spec.Linux.ReadonlyPaths {
		src, err := securejoin.SecureJoin(rootfs, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if unix.Lstat(src, &st) != nil || !specialFile(st.Mode) {
			keep = append(keep, p)
			continue
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: p, Type: "bind", Source: src,
			Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}
	spec.Linux.ReadonlyPaths = keep
	return nil
}

// specialFile: a device node, FIFO or socket, which QEMU's 9p server
// cannot open to answer statfs (EACCES on a nodev mount, ENXIO).
func specialFile(mode uint32) bool {
	switch mode & unix.S_IFMT {
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		return true
	}
	return false
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// shareRelative resolves a bind mount source the host rewrote to a path
// relative to the share.
func shareRelative(share, src string) (string, error) {
	if src == "" || filepath.IsAbs(src) || strings.Contains(src, "..") {
		return "", fmt.Errorf("bind source %q is not a path inside the share", src)
	}
	return filepath.Join(share, filepath.Clean(src)), nil
}

// Each host submount below a volume must be a mount of its own in the
// guest before libcontainer binds the volume, so that a non-recursive
// read-only bind leaves it writable, as runc does.

// bindSubmounts binds each onto itself: over 9p the host's submounts are
// plain directories to the guest. It returns the binds it made, to be
// unmounted when the container goes.
func bindSubmounts(subs []string) ([]string, error) {
	var binds []string
	for _, p := range subs {
		if err := unix.Mount(p, p, "", unix.MS_BIND, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // gone meanwhile: nothing to keep writable
			}
			return binds, fmt.Errorf("bind %s: %w", p, err)
		}
		binds = append(binds, p)
	}
	return binds, nil
}

func unmountAll(paths []string) {
	for i := len(paths) - 1; i >= 0; i-- {
		unix.Unmount(paths[i], unix.MNT_DETACH)
	}
}

// share9P is how a share is mounted: QEMU serves it over virtio-9p.
// cache=mmap: no caching but what shared writable mappings need, so
// host-side changes are seen at once.
const share9P = "trans=virtio,version=9p2000.L,msize=524288,cache=mmap"

// shareFile mounts the share that holds r (once) and returns the guest path
// of r.
func (cs *containers) shareFile(r *agentv1.Rootfs) (string, error) {
	if r == nil || !transport.ValidID(r.ShareTag) {
		return "", fmt.Errorf("invalid share")
	}
	dir := filepath.Join(cs.sharesDir, r.ShareTag)
	p, err := shareRelative(dir, r.Path)
	if err != nil {
		return "", err
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.shares[r.ShareTag] {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		if err := unix.Mount(r.ShareTag, dir, "9p", 0, share9P); err != nil {
			return "", fmt.Errorf("mount 9p share %q: %w", r.ShareTag, err)
		}
		cs.shares[r.ShareTag] = true
	}
	return p, nil
}
