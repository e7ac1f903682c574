package build

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/erofs/go-erofs"

	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// A layer COPY, ADD or WORKDIR makes is written on the host from trusted
// sources (the build context, or a stage's layer images, which the host
// made): nothing runs in a VM for it. Its entries are gathered first,
// keyed by path (a later source replaces an earlier one, as a copy
// does), then written sorted, so that each directory comes before what
// it holds.

// pending is an entry of a layer being made.
type pending struct {
	hdr  tar.Header
	open func() (io.ReadCloser, error) // a regular file's content
	made bool                          // a directory made for what it holds (its time is the build's)
}

// layerBuilder gathers the entries of one layer that goes on the image
// whose merged view is u.
type layerBuilder struct {
	tmpDir  string // where ADD keeps an archive's contents
	u       *imagefs.Union
	entries map[string]*pending // by absolute path
	now     time.Time
}

func newLayer(u *imagefs.Union, tmpDir string) *layerBuilder {
	return &layerBuilder{u: u, tmpDir: tmpDir, entries: map[string]*pending{}, now: time.Now().UTC().Truncate(time.Second)}
}

// parents gives each missing ancestor of p an entry: the image's own
// directory as it is (so that the overlay keeps its owner and mode), or
// a new one (0755, root's).
func (b *layerBuilder) parents(p string) {
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if _, ok := b.entries[d]; ok {
			continue
		}
		e := &pending{hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: b.now}, made: true}
		if fi, _, err := b.u.Lstat(d); err == nil && fi.IsDir() {
			e = &pending{hdr: headerOf(fi, "")}
		}
		b.entries[d] = e
	}
}

// put adds (or replaces) the entry at p.
func (b *layerBuilder) put(p string, e *pending) {
	p = path.Clean("/" + p)
	if p == "/" {
		return
	}
	b.parents(p)
	b.entries[p] = e
}

// write writes the layer as a tar.
func (b *layerBuilder) write(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, p := range b.sorted() {
		e := b.entries[p]
		h := e.hdr
		h.Name, h.Format = strings.TrimPrefix(p, "/"), tar.FormatPAX
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			rc, err := e.open()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			_, err = io.CopyN(tw, rc, h.Size)
			rc.Close()
			if err != nil {
				return fmt.Errorf("%s: %w (did it change during the build?)", p, err)
			}
		}
	}
	return tw.Close()
}

// sorted is the entries' paths in the order they are written.
func (b *layerBuilder) sorted() []string {
	names := make([]string, 0, len(b.entries))
	for p := range b.entries {
		names = append(names, p)
	}
	sort.Strings(names)
	return names
}

// headerOf is the tar header of a file's metadata (host or erofs).
func headerOf(fi fs.FileInfo, link string) tar.Header {
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return tar.Header{Typeflag: tar.TypeDir, Mode: 0o755, ModTime: fi.ModTime()}
	}
	h.Uname, h.Gname, h.AccessTime, h.ChangeTime = "", "", time.Time{}, time.Time{}
	switch st := fi.Sys().(type) {
	case *erofs.Stat:
		h.Uid, h.Gid = int(st.UID), int(st.GID)
		// The set-id and sticky bits, which go-erofs' Mode() leaves out.
		for bit, raw := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
			if st.Mode&bit != 0 {
				h.Mode |= raw
			}
		}
		if c, ok := st.Xattrs["security.capability"]; ok {
			h.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": c}
		}
	case *syscall.Stat_t:
		h.Uid, h.Gid = int(st.Uid), int(st.Gid)
	}
	return *h
}

// source is where COPY reads: the build context or a stage's image.
type source interface {
	lstat(p string) (fs.FileInfo, error)
	readDir(p string) ([]string, error)
	readLink(p string) (string, error)
	open(p string) (io.ReadCloser, error)
}

// contextSource is the build context, read through an os.Root so that no
// name or link in it reaches outside it.
type contextSource struct{ root *os.Root }

func (c contextSource) lstat(p string) (fs.FileInfo, error) { return c.root.Lstat(imagefs.Rel(p)) }
func (c contextSource) readLink(p string) (string, error)   { return c.root.Readlink(imagefs.Rel(p)) }
func (c contextSource) open(p string) (io.ReadCloser, error) {
	return c.root.OpenFile(imagefs.Rel(p), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
}
func (c contextSource) readDir(p string) ([]string, error) {
	d, err := c.root.Open(imagefs.Rel(p))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// unionSource is a stage's (or an image's) files.
type unionSource struct{ u *imagefs.Union }

func (s unionSource) lstat(p string) (fs.FileInfo, error) {
	if imagefs.Rel(p) == "." {
		return rootInfo{}, nil // the root is no layer's entry, but a source may be it
	}
	fi, _, err := s.u.Lstat(p)
	return fi, err
}

// rootInfo is a stage's root as a source: a directory, root's, 0755.
type rootInfo struct{}

func (rootInfo) Name() string       { return "/" }
func (rootInfo) Size() int64        { return 0 }
func (rootInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o755 }
func (rootInfo) ModTime() time.Time { return time.Unix(0, 0).UTC() }
func (rootInfo) IsDir() bool        { return true }
func (rootInfo) Sys() any           { return nil }
func (s unionSource) readLink(p string) (string, error) {
	_, l, err := s.u.Lstat(p)
	if err != nil {
		return "", err
	}
	return l.ReadLink(imagefs.Rel(p))
}
func (s unionSource) open(p string) (io.ReadCloser, error) {
	_, l, err := s.u.Lstat(p)
	if err != nil {
		return nil, err
	}
	return l.Open(imagefs.Rel(p))
}
func (s unionSource) readDir(p string) ([]string, error) {
	ents, err := s.u.ReadDir(p)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	return names, err
}

// copyOpts are COPY's and ADD's flags that shape what they write.
type copyOpts struct {
	owner     *[2]int      // --chown's uid and gid; nil keeps the source's (from a stage) or root's (from the context)
	mode      *fs.FileMode // --chmod
	fromStage bool
	skip      func(p string, dir bool) bool // .dockerignore's exclusions (context paths)
	// exclude is --exclude's patterns, matched against paths relative to
	// excludeRoot, the source being copied.
	exclude     *excluder
	excludeRoot string
}

// copyTree copies src of s (a file, link or directory: a directory's
// content) to dst in the layer.
func (b *layerBuilder) copyTree(s source, src, dst string, o copyOpts) error {
	fi, err := s.lstat(src)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if _, exists := b.entries[dst]; !exists && !b.u.IsDir(dst) {
			b.put(dst, b.entry(s, src, fi, o))
		}
		names, err := s.readDir(src)
		if err != nil {
			return err
		}
		for _, n := range names {
			sp := path.Join(src, n)
			cfi, err := s.lstat(sp)
			if err != nil {
				return err
			}
			if o.skip != nil && o.skip(sp, cfi.IsDir()) {
				continue
			}
			if o.exclude.out(strings.TrimPrefix(strings.TrimPrefix(sp, o.excludeRoot), "/")) {
				continue
			}
			if err := b.copyTree(s, sp, path.Join(dst, n), o); err != nil {
				return err
			}
		}
		return nil
	}
	switch {
	case fi.Mode().IsRegular(), fi.Mode()&fs.ModeSymlink != 0:
		b.put(dst, b.entry(s, src, fi, o))
	}
	// Devices, fifos and sockets of a context are not copied (nor by
	// docker's builder); a stage's are copied as a stage has them.
	if o.fromStage && fi.Mode()&(fs.ModeDevice|fs.ModeNamedPipe) != 0 && !imagefs.Whiteout(fi) {
		b.put(dst, b.entry(s, src, fi, o))
	}
	return nil
}

// entry is the layer entry of src.
func (b *layerBuilder) entry(s source, src string, fi fs.FileInfo, o copyOpts) *pending {
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		link, _ = s.readLink(src)
	}
	h := headerOf(fi, link)
	if !o.fromStage {
		h.Uid, h.Gid, h.PAXRecords = 0, 0, nil
	}
	if o.owner != nil {
		h.Uid, h.Gid = o.owner[0], o.owner[1]
	}
	if o.mode != nil && fi.Mode()&fs.ModeSymlink == 0 {
		h.Mode = int64(*o.mode)
	}
	e := &pending{hdr: h}
	if fi.Mode().IsRegular() {
		e.open = func() (io.ReadCloser, error) { return s.open(src) }
	}
	return e
}

// lookupOwner resolves --chown's USER[:GROUP] (names or numbers) in the
// image's /etc/passwd and /etc/group, as docker's builder does (a user
// alone is also the group).
func lookupOwner(u *imagefs.Union, spec string) (*[2]int, error) {
	if spec == "" {
		return nil, nil
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	uid, _, err := lookupID(u, "/etc/passwd", user)
	if err != nil {
		return nil, fmt.Errorf("--chown %s: %w", spec, err)
	}
	gid := uid
	if hasGroup {
		if gid, _, err = lookupID(u, "/etc/group", group); err != nil {
			return nil, fmt.Errorf("--chown %s: %w", spec, err)
		}
	}
	return &[2]int{uid, gid}, nil
}

// runUser is USER's user as UID:GID for a RUN: names looked up in the
// image, a user's group its primary one (0 for a number the image does
// not list).
func runUser(u *imagefs.Union, spec string) (string, error) {
	user, group, hasGroup := strings.Cut(spec, ":")
	uid, primary, err := lookupID(u, "/etc/passwd", user)
	if err != nil {
		return "", fmt.Errorf("USER %s: %w", spec, err)
	}
	gid := primary
	if hasGroup {
		if gid, _, err = lookupID(u, "/etc/group", group); err != nil {
			return "", fmt.Errorf("USER %s: %w", spec, err)
		}
	}
	return fmt.Sprintf("%d:%d", uid, gid), nil
}

// lookupID is the id of name in an /etc/passwd or /etc/group of u (a
// number is itself) and, in /etc/passwd, its primary group (0 if none).
func lookupID(u *imagefs.Union, file, name string) (id, group int, err error) {
	n, numErr := strconv.Atoi(name)
	if numErr == nil && n < 0 {
		return 0, 0, fmt.Errorf("%s: not an id", name)
	}
	_, l, err := u.Lstat(file)
	if err != nil {
		if numErr == nil {
			return n, 0, nil
		}
		return 0, 0, fmt.Errorf("%s is not a number and the image has no %s", name, file)
	}
	f, err := l.Open(imagefs.Rel(file))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 3 || fields[0] != name && fields[2] != name {
			continue
		}
		id, err := strconv.Atoi(fields[2])
		if err != nil {
			continue
		}
		if len(fields) >= 4 {
			group, _ = strconv.Atoi(fields[3])
		}
		return id, group, nil
	}
	if numErr == nil {
		return n, 0, nil
	}
	return 0, 0, fmt.Errorf("no %q in the image's %s", name, file)
}

var errNoMatch = errors.New("no such file or directory in the build context")
