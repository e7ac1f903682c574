package layers

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"
)

// ErrBadTar reports a layer tar that cannot be a container layer: an entry
// whose path leaves the root, goes through a symbolic link of the same
// layer, or appears twice.
var ErrBadTar = errors.New("bad layer")

// DiffKey names the image of a layer by its diff ID (the digest of its
// uncompressed tar).
func DiffKey(diffID string) string { return "diff-" + strings.TrimPrefix(diffID, "sha256:") }

// FromTar returns the image of the layer whose diff ID is diffID, made
// from the uncompressed layer tar r unless the store has it. OCI
// whiteouts become overlayfs ones (.wh.NAME: a 0/0 character device;
// .wh..wh..opq: trusted.overlay.opaque=y on its directory). verify, if
// set, runs after r has been read to its end (to check the digest) and
// fails the conversion with its error. Concurrent calls convert once.
func (s *Store) FromTar(ctx context.Context, diffID string, r io.Reader, verify func() error) (string, bool, error) {
	hexID, ok := strings.CutPrefix(diffID, "sha256:")
	if !ok || len(hexID) != 64 || strings.Trim(hexID, "0123456789abcdef") != "" {
		return "", false, fmt.Errorf("layer %q: not a sha256 diff ID", diffID)
	}
	return s.get(ctx, DiffKey(diffID), diffID, func(out *os.File) error {
		if err := writeTar(out, r); err != nil {
			return err
		}
		if verify != nil {
			return verify()
		}
		return nil
	})
}

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

func writeTar(out *os.File, r io.Reader) error {
	w := erofs.Create(out, erofs.WithTempDir(path.Dir(out.Name())))
	hard := hardLinks{}
	err := addTar(w, tar.NewReader(r), hard)
	if err == nil {
		// Read to the end: the digest covers the archive's padding too.
		_, err = io.Copy(io.Discard, r)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = linkNames(out, hard)
	}
	return err
}

func addTar(w *erofs.Writer, tr *tar.Reader, hard hardLinks) error {
	links := map[string]bool{} // symbolic links of this layer
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %w", err)
		}
		name, err := entryPath(hdr.Name)
		if err != nil {
			return err
		}
		if name == "/" {
			continue // the root's own entry ("./")
		}
		for d := path.Dir(name); d != "/"; d = path.Dir(d) {
			if links[d] {
				return fmt.Errorf("%w: %s is below %s, a symbolic link in the same layer", ErrBadTar, hdr.Name, d)
			}
		}
		dir, base := path.Dir(name), path.Base(name)
		switch {
		case base == opaqueMarker:
			if err := ensureDir(w, dir); err != nil {
				return err
			}
			if err := w.Setxattr(dir, "trusted.overlay.opaque", "y"); err != nil {
				return err
			}
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			gone := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
			if err := w.Mknod(gone, unix.S_IFCHR, 0); err != nil {
				return fmt.Errorf("%w: whiteout %s: %v", ErrBadTar, hdr.Name, err)
			}
			continue
		}
		if hdr.Typeflag == tar.TypeLink {
			// a name of a file already in the layer: its inode's metadata are the file's
			if err := addHardLink(w, hard, hdr, name); err != nil {
				return err
			}
			continue
		}
		if err := addTarEntry(w, tr, hdr, name); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeSymlink {
			links[name] = true
		}
		if err := setMeta(w, hdr, name); err != nil {
			return err
		}
	}
}

// entryPath cleans a tar entry's name into an absolute path in the layer,
// refusing one that is absolute or climbs out with "..".
func entryPath(n string) (string, error) {
	if strings.HasPrefix(n, "/") {
		return "", fmt.Errorf("%w: entry %q has an absolute path", ErrBadTar, n)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: entry %q leaves the layer's root", ErrBadTar, n)
		}
	}
	if strings.ContainsRune(n, 0) {
		return "", fmt.Errorf("%w: entry %q has a NUL byte", ErrBadTar, n)
	}
	return path.Clean("/" + n), nil
}

func ensureDir(w *erofs.Writer, dir string) error {
	if dir == "/" {
		return nil
	}
	if fi, err := w.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory", ErrBadTar, dir)
		}
		return nil
	}
	return w.Mkdir(dir, 0o755)
}

func addTarEntry(w *erofs.Writer, tr *tar.Reader, hdr *tar.Header, name string) error {
	dup := func(err error) error {
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadTar, hdr.Name, err)
		}
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := w.Stat(name); err == nil && fi.IsDir() {
			return nil // made as a parent of an earlier entry
		}
		return dup(w.Mkdir(name, 0o755))
	case tar.TypeReg, tar.TypeRegA:
		f, err := w.Create(name)
		if err != nil {
			return dup(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return fmt.Errorf("read layer tar: %s: %w", hdr.Name, err)
		}
		return f.Close()
	case tar.TypeSymlink:
		return dup(w.Symlink(hdr.Linkname, name))
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		return dup(w.Mknod(name, uint16(typ|uint32(hdr.Mode)&0o7777), uint32(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))))
	}
	return fmt.Errorf("%w: %s: unsupported entry type %q", ErrBadTar, hdr.Name, hdr.Typeflag)
}

// addHardLink adds name as another name of the regular file the layer
// already has at the link's target.
func addHardLink(w *erofs.Writer, hard hardLinks, hdr *tar.Header, name string) error {
	target, err := entryPath(hdr.Linkname)
	if err != nil {
		return err
	}
	fi, err := w.Stat(target)
	if err != nil {
		return fmt.Errorf("%w: hard link %s to %s: %v", ErrBadTar, hdr.Name, hdr.Linkname, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: hard link %s to %s: not a regular file", ErrBadTar, hdr.Name, hdr.Linkname)
	}
	if err := hard.placeholder(w, name, target); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadTar, hdr.Name, err)
	}
	return nil
}

// setMeta gives an entry the tar header's mode, owner, time and xattrs.
func setMeta(w *erofs.Writer, hdr *tar.Header, name string) error {
	if hdr.Typeflag != tar.TypeSymlink {
		if err := w.Chmod(name, fileMode(uint32(hdr.Mode))); err != nil {
			return err
		}
	}
	if err := w.Chown(name, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := w.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if err := w.Setxattr(name, x, v); err != nil {
				return err
			}
		}
	}
	return nil
}
