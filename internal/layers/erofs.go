package layers

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"
)

// writeDir writes an erofs image of the tree at dir to out, keeping what
// overlayfs and the container need from each entry: type, permission bits
// (setuid, setgid, sticky included), owner, modification time, device
// numbers (a 0/0 character device is a whiteout) and extended attributes
// (trusted.overlay.opaque, security.capability). Symbolic links are kept
// as links, never followed. Names of one file (hard links) stay names of
// one inode, whose data is stored once.
func writeDir(out *os.File, dir string) error {
	w := erofs.Create(out, erofs.WithTempDir(filepath.Dir(out.Name())))
	links := hardLinks{}
	seen := map[[2]uint64]string{} // device and inode of a multiply linked file -> its first name
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := "/" + filepath.ToSlash(rel)
		if rel == "." {
			name = "/"
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1 {
			id := [2]uint64{st.Dev, st.Ino}
			if first, ok := seen[id]; ok {
				return links.placeholder(w, name, first)
			}
			seen[id] = name
		}
		return addEntry(w, p, name, &st)
	})
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = linkNames(out, links)
	}
	return err
}

func addEntry(w *erofs.Writer, p, name string, st *unix.Stat_t) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := w.Mkdir(name, 0o755); err != nil {
			return err
		}
	case unix.S_IFREG:
		if err := addFile(w, p, name); err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if err := w.Symlink(target, name); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		if err := w.Mknod(name, uint16(st.Mode&(unix.S_IFMT|0o7777)), uint32(st.Rdev)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: unknown file type %#o", p, st.Mode&unix.S_IFMT)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := w.Chmod(name, fileMode(st.Mode)); err != nil {
			return err
		}
	}
	if err := w.Chown(name, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	mtime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	if err := w.Chtimes(name, mtime, mtime); err != nil {
		return err
	}
	xattrs, err := listXattrs(p)
	if err != nil {
		return err
	}
	for k, v := range xattrs {
		if err := w.Setxattr(name, k, v); err != nil {
			return err
		}
	}
	return nil
}

func addFile(w *erofs.Writer, p, name string) error {
	src, err := os.Open(p)
	if err != nil {
		return err
	}
	defer src.Close()
	f, err := w.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(src); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p, err)
	}
	return f.Close()
}

// fileMode turns a stat mode's permission bits into an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		fm |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

// listXattrs reads every extended attribute of p (not following links).
func listXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		if err == unix.ENOTSUP {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, size)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		vs, err := unix.Lgetxattr(p, k, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: xattr %s: %w", p, k, err)
		}
		v := make([]byte, vs)
		if vs > 0 {
			if vs, err = unix.Lgetxattr(p, k, v); err != nil {
				return nil, fmt.Errorf("%s: xattr %s: %w", p, k, err)
			}
		}
		out[k] = string(v[:vs])
	}
	return out, nil
}

func runCmd(ctx context.Context, bin string, args ...string) (string, error) {
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}
