package agent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A container's changes (lodge commit and diff): what its writable layer
// holds, as an OCI image layer. The walk is of the overlay's upper
// directory, never of the merged root, so that nothing mounted on the
// container's root (volumes, /proc, the host's files) is in it.
//
//	upper entry                         tar entry
//	file, dir, symlink, device, fifo    the same, with owner, mode, mtime,
//	                                    security.capability (SCHILY.xattr)
//	second name of an inode             a hard link to the first
//	char device 0/0 (a whiteout)        DIR/.wh.NAME
//	dir with trusted.overlay.opaque=y   DIR, then DIR/.wh..wh..opq
//	socket                              nothing (tar has no sockets)
//
// Each entry whose path a lower layer has carries the PAX record
// ChangedRecord ("C" in lodge diff; "A" without it); the host drops it
// from a committed layer. Mount points the runtime made for the
// container's mounts (an empty file or directory at a mount's
// destination, and directories that hold nothing else) are left out, as
// docker leaves out its init layer. An error the walk meets before any
// output is sent as a PAX global header with ErrorRecord, for the host to
// show; a stream that is whole ends with one with EndRecord (a tar cut at
// an entry's end reads as a whole one).
const (
	ChangedRecord = "LODGE.lower"
	ErrorRecord   = "LODGE.error"
	EndRecord     = "LODGE.end"
)

// writableOf returns the upper directory and the lower layers (topmost
// first) of a root layeredRoot built with a writable image: its mounts
// are the layers, then <base>/rw, then <base>/root.
func writableOf(mounts []string) (upper string, lowers []string, ok bool) {
	n := len(mounts)
	if n < 3 || filepath.Base(mounts[n-2]) != "rw" {
		return "", nil, false
	}
	return filepath.Join(mounts[n-2], "upper"), mounts[:n-2], true
}

// writeChanges writes the changes of container id to w; with whole, its
// whole root instead (lodge export): the overlay's merged view, which
// holds no whiteouts, with the runtime's mount points left out where no
// layer of the image has them.
func (cs *containers) writeChanges(id string, whole bool, w io.Writer) error {
	tw := tar.NewWriter(w)
	fail := func(err error) error {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "error",
			PAXRecords: map[string]string{ErrorRecord: err.Error()}})
		return err
	}
	c, err := cs.get(id)
	if err != nil {
		return fail(fmt.Errorf("container %s: %w", id, errNotFound))
	}
	upper, lowers, ok := writableOf(c.layered)
	if !ok && whole && len(c.layered) > 0 {
		upper, ok = c.layered[len(c.layered)-1], true // a read-only root: all of it is the image's
	}
	if !ok {
		return fail(fmt.Errorf("container %s has no writable layer of its own in the guest (its root is a shared directory or read-only)", id))
	}
	mountPoints := map[string]bool{}
	for _, m := range c.c.Config().Mounts {
		mountPoints[path.Clean("/"+m.Destination)] = true
	}
	dir := upper
	if whole {
		// The root itself, in the agent's mount namespace: none of the
		// container's own mounts is on it.
		dir = c.layered[len(c.layered)-1]
	}
	ents, err := walkUpper(dir, lowers, mountPoints, whole)
	if err != nil {
		return fail(err)
	}
	if err := writeEntries(tw, dir, ents); err != nil {
		return err // the stream ends without EndRecord: the host refuses it
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "end",
		PAXRecords: map[string]string{EndRecord: "1"}}); err != nil {
		return err
	}
	return tw.Close()
}

// upperEntry is one entry of the upper directory.
type upperEntry struct {
	rel      string // relative to the upper directory
	fi       fs.FileInfo
	whiteout bool
	opaque   bool
	lower    bool // a lower layer has this path
	keep     bool
}

// walkUpper lists upper's entries in lexical order and decides which go
// into the layer (see above).
func walkUpper(upper string, lowers []string, mountPoints map[string]bool, whole bool) ([]upperEntry, error) {
	var ents []upperEntry
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed since its directory was read (a container not paused)
		}
		if err != nil {
			return err
		}
		if p == upper {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel := p[len(upper)+1:]
		e := upperEntry{rel: rel, fi: fi, whiteout: isWhiteout(fi), lower: lowerHas(lowers, rel)}
		if fi.IsDir() {
			v := make([]byte, 1)
			n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", v)
			e.opaque = err == nil && n == 1 && v[0] == 'y'
		}
		ents = append(ents, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the writable layer: %w", err)
	}
	// Backwards, so that a directory is decided after what it holds.
	holds := map[string]bool{}      // a kept entry is under this directory
	onlyMounts := map[string]bool{} // a left-out mount point is under it
	for i := len(ents) - 1; i >= 0; i-- {
		e := &ents[i]
		parent := filepath.Dir(e.rel)
		empty := e.fi.IsDir() && !holds[e.rel] && !e.opaque
		switch {
		case whole && e.lower:
			e.keep = true // the image's own, whatever is mounted on it
			holds[parent] = true
		case !e.whiteout && mountPoints["/"+e.rel] && (empty || e.fi.Mode().IsRegular() && e.fi.Size() == 0),
			empty && onlyMounts[e.rel]:
			onlyMounts[parent] = true
		default:
			e.keep = true
			holds[parent] = true
		}
	}
	return ents, nil
}

// isWhiteout: overlayfs records a deleted lower path as a 0/0 character
// device.
func isWhiteout(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0
}

// lowerHas reports whether the topmost lower layer that names rel has it
// (rather than a whiteout of it).
func lowerHas(lowers []string, rel string) bool {
	for _, l := range lowers {
		fi, err := os.Lstat(filepath.Join(l, rel))
		if err == nil {
			return !isWhiteout(fi)
		}
	}
	return false
}

// inode names a file of the upper directory.
type inode struct{ dev, ino uint64 }

// writeEntries writes the kept entries; what was removed since the walk
// is left out.
func writeEntries(tw *tar.Writer, upper string, ents []upperEntry) error {
	first := map[inode]string{} // the first name of each hard-linked inode
	for _, e := range ents {
		if !e.keep {
			continue
		}
		dir, base := filepath.Split(e.rel)
		if e.whiteout {
			if err := tw.WriteHeader(&tar.Header{Name: dir + ".wh." + base, Typeflag: tar.TypeReg, Mode: 0o600,
				ModTime: e.fi.ModTime(), Format: tar.FormatPAX}); err != nil {
				return err
			}
			continue
		}
		if e.fi.Mode()&fs.ModeSocket != 0 {
			continue
		}
		p := filepath.Join(upper, e.rel)
		link := ""
		if e.fi.Mode()&fs.ModeSymlink != 0 {
			l, err := os.Readlink(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since the walk
			}
			if err != nil {
				return err
			}
			link = l
		}
		var body *os.File
		if e.fi.Mode().IsRegular() && e.fi.Size() > 0 {
			f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("%s: %w", e.rel, err)
			}
			body = f
		}
		if err := writeEntry(tw, e, p, link, body, first); err != nil {
			return err
		}
	}
	return nil
}

// writeEntry writes one entry of the upper directory at p; body is its
// content, opened (and closed here) for a regular file that has any.
func writeEntry(tw *tar.Writer, e upperEntry, p, link string, body *os.File, first map[inode]string) error {
	if body != nil {
		defer body.Close()
	}
	h, err := tar.FileInfoHeader(e.fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", e.rel, err)
	}
	st := e.fi.Sys().(*syscall.Stat_t)
	h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.Format = e.rel, int(st.Uid), int(st.Gid), "", "", tar.FormatPAX
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	h.PAXRecords = map[string]string{}
	if e.lower {
		h.PAXRecords[ChangedRecord] = "1"
	}
	if e.fi.IsDir() {
		h.Name += "/"
	}
	if capab := xattr(p, "security.capability"); capab != "" {
		h.PAXRecords["SCHILY.xattr.security.capability"] = capab
	}
	if e.fi.Mode().IsRegular() && st.Nlink > 1 {
		k := inode{st.Dev, st.Ino}
		if name, ok := first[k]; ok {
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, name, 0
		} else {
			first[k] = e.rel
		}
	}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", e.rel, err)
	}
	if h.Typeflag == tar.TypeReg && body != nil {
		// The size the header promised; a file that shrank since the
		// walk (a container not paused) cannot be sent.
		if _, err := io.CopyN(tw, body, h.Size); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the file shrank while it was read (pause the container)")
			}
			return fmt.Errorf("%s: %w", e.rel, err)
		}
	}
	if e.opaque {
		if err := tw.WriteHeader(&tar.Header{Name: e.rel + "/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o600,
			ModTime: e.fi.ModTime(), Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	return nil
}

func xattr(p, name string) string {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil || n <= 0 {
		return ""
	}
	return string(buf[:n])
}
