package imagefs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"
)

// CopyInto fills dir, a host directory with no entries, with directory p
// of the image (its links followed, as the container's mount point
// resolves), the way docker fills an empty volume from the image it is
// mounted on: names, contents, owners, modes, modification times, hard
// links, and the files' user.* attributes; dir itself takes the image
// directory's owner, mode and time. What an image holds does not give
// the host what a guest's writes to its share cannot: set-user-ID and
// set-group-ID bits and file capabilities are left out (docker keeps
// them), and device nodes, fifos and sockets are not made, since a guest
// could reach a host device through one; the latter's paths come back in
// skipped. It copies nothing, and says so, when p is no directory of the
// image or dir has entries already.
//
// Everything is written through an os.Root at dir, so no name or link in
// the image reaches outside it.
func (u *Union) CopyInto(p, dir string) (copied bool, skipped []string, err error) {
	src, err := u.Resolve(p, true)
	if err != nil {
		return false, nil, err
	}
	if Rel(src) == "." || !u.IsDir(src) {
		return false, nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) > 0 {
		return false, nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, nil, err
	}
	defer root.Close()
	c := &copier{u: u, root: root, links: map[linkKey]string{}}
	if err := c.dir(src, "."); err != nil {
		return true, c.skipped, fmt.Errorf("copying the image's %s: %w", src, err)
	}
	return true, c.skipped, nil
}

type linkKey struct {
	layer Layer
	ino   int64
}

type copier struct {
	u       *Union
	root    *os.Root
	links   map[linkKey]string // a hard-linked file's first copy
	skipped []string
}

// dir copies the entries of the image's directory src into dst (a
// directory in root that exists), then gives dst src's metadata.
func (c *copier) dir(src, dst string) error {
	ents, err := c.u.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := c.entry(path.Join(src, e.Name), path.Join(dst, e.Name), e.Layer); err != nil {
			return err
		}
	}
	fi, _, err := c.u.Lstat(src)
	if err != nil {
		return err
	}
	return c.meta(dst, fi)
}

func (c *copier) entry(src, dst string, l Layer) error {
	fi, err := l.Lstat(Rel(src))
	if err != nil {
		return err
	}
	st, _ := fi.Sys().(*erofs.Stat)
	switch {
	case fi.IsDir():
		if err := c.root.Mkdir(dst, 0o700); err != nil {
			return err
		}
		return c.dir(src, dst)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := l.ReadLink(Rel(src))
		if err != nil {
			return err
		}
		if err := c.root.Symlink(target, dst); err != nil {
			return err
		}
		if st != nil {
			return c.root.Lchown(dst, int(st.UID), int(st.GID))
		}
		return nil
	case fi.Mode().IsRegular():
		if st != nil && st.Nlink > 1 {
			key := linkKey{l, st.Ino}
			if first, ok := c.links[key]; ok {
				return c.root.Link(first, dst)
			}
			c.links[key] = dst
		}
		if err := c.file(src, dst, l); err != nil {
			return err
		}
		return c.meta(dst, fi)
	default:
		c.skipped = append(c.skipped, src)
		return nil
	}
}

func (c *copier) file(src, dst string, l Layer) error {
	in, err := l.Open(Rel(src))
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := c.root.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// meta gives dst (a directory or a regular file) fi's owner, mode (but
// its set-id bits), user attributes and modification time.
func (c *copier) meta(dst string, fi fs.FileInfo) error {
	st, _ := fi.Sys().(*erofs.Stat)
	if st != nil {
		if err := c.root.Lchown(dst, int(st.UID), int(st.GID)); err != nil {
			return err
		}
	}
	if err := c.root.Chmod(dst, Mode(fi)&(fs.ModePerm|fs.ModeSticky)); err != nil {
		return err
	}
	if st != nil && len(st.Xattrs) > 0 {
		if err := c.xattrs(dst, st.Xattrs); err != nil {
			return err
		}
	}
	return c.root.Chtimes(dst, time.Time{}, fi.ModTime())
}

func (c *copier) xattrs(dst string, xs map[string]string) error {
	f, err := c.root.OpenFile(dst, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for k, v := range xs {
		if !strings.HasPrefix(k, "user.") {
			continue // overlayfs' own (trusted.*), capabilities, labels of another host
		}
		if err := unix.Fsetxattr(int(f.Fd()), k, []byte(v), 0); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("%s: attribute %s: %w", dst, k, err)
		}
	}
	return nil
}

// Mode is fi's mode with its set-id and sticky bits, which go-erofs'
// FileInfo.Mode leaves out (its Stat keeps them).
func Mode(fi fs.FileInfo) fs.FileMode {
	if st, ok := fi.Sys().(*erofs.Stat); ok {
		return st.Mode
	}
	return fi.Mode()
}
