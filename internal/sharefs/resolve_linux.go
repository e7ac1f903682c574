package sharefs

import (
	"errors"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// resolveFlags confine a lookup below its starting directory, on the
// share's own tmpfs: no symlink (nor /proc magic link) is followed and no
// mount point is crossed, so a lookup never reaches into an attachment.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openBeneath opens rel below dirfd with resolveFlags (a symlink as the
// last component fails with ELOOP).
func openBeneath(dirfd int, rel string, flags uint64) (int, error) {
	return unix.Openat2(dirfd, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolveFlags})
}

// mkdirAll makes rel below dirfd one component at a time and returns an
// O_PATH descriptor of it.
func mkdirAll(dirfd int, rel string) (int, error) {
	fd, err := unix.Dup(dirfd)
	if err != nil {
		return -1, err
	}
	if rel == "." {
		return fd, nil
	}
	for _, name := range strings.Split(rel, "/") {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return -1, err
		}
		next, err := openBeneath(fd, name, unix.O_PATH|unix.O_DIRECTORY)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// removeTree removes name below dirfd, depth first, without following
// symlinks or entering mounts (EXDEV if one is still attached).
func removeTree(dirfd int, name string) error {
	fd, err := openBeneath(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		return unix.Unlinkat(dirfd, name, 0)
	case err != nil:
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeTree(fd, n); err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}
