package sandbox

import (
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/hostmount"
)

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

// sourceName is the last element of a bind source, kept last in its
// target below the share as a bind mount shows it in mountinfo.
func sourceName(src string) string {
	if b := filepath.Base(filepath.Clean(src)); b != "/" {
		return b
	}
	return "root"
}

// makeMountpoints creates the mount points of a container's mounts in its
// root filesystem on the host, where they are missing, before a read-only
// root is attached: the guest cannot create them there, and runc too makes
// them in the rootfs before it remounts it read-only. Paths resolve inside
// root (RESOLVE_IN_ROOT: a symlink, perhaps left by an earlier container,
// cannot lead outside it). Best effort: a mount point that cannot be made
// fails the container in the guest, with libcontainer's error. A mount
// nested in an earlier one (/dev/pts in /dev) has its mount point there.
func makeMountpoints(root string, mounts []specs.Mount) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(rfd)
	var dests []string
	for _, m := range mounts {
		dest := filepath.Clean("/" + m.Destination)
		nested := false
		for _, d := range dests {
			nested = nested || strings.HasPrefix(dest, d+"/")
		}
		dests = append(dests, dest)
		if dest == "/" || nested {
			continue // on the mount above it, not in the rootfs
		}
		isFile := false
		if isBind(m) {
			if st, err := os.Stat(m.Source); err == nil && !st.IsDir() {
				isFile = true
			}
		}
		parts := strings.Split(dest[1:], "/")
		for i := range parts {
			makeInRoot(rfd, parts[:i+1], isFile && i == len(parts)-1)
		}
	}
}

// makeInRoot creates path (components below rfd) if it is missing, as a
// directory or an empty file.
func makeInRoot(rfd int, path []string, file bool) {
	how := func(p string) (int, error) {
		return unix.Openat2(rfd, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	}
	full := strings.Join(path, "/")
	if fd, err := how(full); err == nil {
		unix.Close(fd)
		return
	}
	parent := "."
	if len(path) > 1 {
		parent = strings.Join(path[:len(path)-1], "/")
	}
	pfd, err := how(parent)
	if err != nil {
		return
	}
	defer unix.Close(pfd)
	name := path[len(path)-1]
	if !file {
		unix.Mkdirat(pfd, name, 0o755)
		return
	}
	if fd, err := unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644); err == nil {
		unix.Close(fd)
	}
}
