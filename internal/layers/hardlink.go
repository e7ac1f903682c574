package layers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/erofs/go-erofs"
)

// Hard links. go-erofs (v0.3) writes one inode per name and has no call
// that gives a second name to an inode, so a layer whose files are hard
// links of each other (busybox's ~400 applets are one 1.3 MB binary)
// would store the binary once per name: 530 MB instead of 2 MB, and
// seconds to write. A layer's extra names are therefore written as empty
// placeholder files, and once the writer is done, linkNames points each
// placeholder's directory entry at the first name's inode and sets that
// inode's link count, as mkfs.erofs does for hard links. The placeholder
// inodes stay in the image unreferenced (32 bytes each). The on-disk
// format is the kernel's (Documentation/filesystems/erofs.rst): inodes
// live at meta_blkaddr*blocksize + nid*32; a directory's data is blocks of
// 12-byte dirents {nid le64, nameoff le16, type, reserved} followed by
// their names.

// hardLinks records, while a layer is written, the names that are to be
// hard links: name -> the layer's first name of the same file.
type hardLinks map[string]string

// placeholder adds name as an empty file that linkNames makes a link to
// first.
func (h hardLinks) placeholder(w *erofs.Writer, name, first string) error {
	if p, ok := h[first]; ok {
		first = p // a link to a link is a link to the file
	}
	f, err := w.Create(name)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	h[name] = first
	return nil
}

const (
	superOffset  = 1024
	erofsMagic   = 0xe0f5e1e2
	direntSize   = 12
	layoutPlain  = 0
	layoutInline = 2
)

// erofsSuperblock reads the first 128 bytes of an erofs image's
// superblock, checking its magic.
func erofsSuperblock(img io.ReaderAt) ([]byte, error) {
	sb := make([]byte, 128)
	if _, err := img.ReadAt(sb, superOffset); err != nil {
		return nil, fmt.Errorf("read superblock: %w", err)
	}
	if binary.LittleEndian.Uint32(sb[0:4]) != erofsMagic {
		return nil, errors.New("not an erofs image")
	}
	return sb, nil
}

// linkNames makes the recorded names hard links in the finished image img.
func linkNames(img *os.File, links hardLinks) error {
	if len(links) == 0 {
		return nil
	}
	sb, err := erofsSuperblock(img)
	if err != nil {
		return fmt.Errorf("hard links: %w", err)
	}
	bits := sb[12]
	if bits < 9 || bits > 16 {
		return fmt.Errorf("hard links: block size 2^%d", bits)
	}
	im := &rawImage{f: img, bs: int64(1) << bits, meta: int64(binary.LittleEndian.Uint32(sb[40:44])) << bits}
	fsys, err := erofs.Open(img)
	if err != nil {
		return fmt.Errorf("hard links: %w", err)
	}
	nid := func(name string, want fs.FileMode) (uint64, error) {
		rel := strings.TrimPrefix(name, "/")
		if rel == "" {
			rel = "."
		}
		fi, err := fs.Stat(fsys, rel)
		if err != nil {
			return 0, err
		}
		if fi.Mode().Type() != want {
			return 0, fmt.Errorf("%s is not a %s", name, map[fs.FileMode]string{0: "regular file", fs.ModeDir: "directory"}[want])
		}
		return uint64(fi.Sys().(*erofs.Stat).Ino), nil
	}
	byDir := map[string]map[string]uint64{} // directory -> name in it -> the inode it is to name
	count := map[uint64]uint32{}
	for name, first := range links {
		target, err := nid(first, 0)
		if err != nil {
			return fmt.Errorf("hard link %s to %s: %w", name, first, err)
		}
		dir := path.Dir(name)
		if byDir[dir] == nil {
			byDir[dir] = map[string]uint64{}
		}
		byDir[dir][path.Base(name)] = target
		count[target]++
	}
	for dir, names := range byDir {
		d, err := nid(dir, fs.ModeDir)
		if err != nil {
			return fmt.Errorf("hard links in %s: %w", dir, err)
		}
		if err := im.repoint(d, names); err != nil {
			return fmt.Errorf("hard links in %s: %w", dir, err)
		}
	}
	for target, n := range count {
		if err := im.setNlink(target, 1+n); err != nil {
			return fmt.Errorf("hard links: %w", err)
		}
	}
	return nil
}

type rawImage struct {
	f    *os.File
	bs   int64 // block size
	meta int64 // byte offset of the metadata area (nid 0)
}

// inode is what linkNames needs of an on-disk inode.
type inode struct {
	off      int64 // byte offset of the inode
	extended bool  // 64-byte inode (else 32)
	layout   int
	size     int64
	blkaddr  int64 // first data block (flat layouts)
	tailOff  int64 // byte offset of inline data (after inode and xattrs)
}

func (im *rawImage) inode(nid uint64) (inode, error) {
	var b [64]byte
	off := im.meta + int64(nid)*32
	if _, err := im.f.ReadAt(b[:], off); err != nil {
		return inode{}, fmt.Errorf("inode %d: %w", nid, err)
	}
	format := binary.LittleEndian.Uint16(b[0:2])
	in := inode{off: off, extended: format&1 != 0, layout: int(format>>1) & 7}
	isize := int64(32)
	if in.extended {
		isize = 64
		in.size = int64(binary.LittleEndian.Uint64(b[8:16]))
	} else {
		in.size = int64(binary.LittleEndian.Uint32(b[8:12]))
	}
	in.blkaddr = int64(binary.LittleEndian.Uint32(b[16:20]))
	xattrs := int64(0)
	if n := int64(binary.LittleEndian.Uint16(b[2:4])); n > 0 {
		xattrs = 12 + (n-1)*4
	}
	in.tailOff = off + isize + xattrs
	return in, nil
}

// repoint rewrites, in directory dir, the entry of each name in names to
// the inode it maps to.
func (im *rawImage) repoint(dir uint64, names map[string]uint64) error {
	in, err := im.inode(dir)
	if err != nil {
		return err
	}
	if in.layout != layoutPlain && in.layout != layoutInline {
		return fmt.Errorf("directory layout %d", in.layout)
	}
	done := 0
	nblocks := (in.size + im.bs - 1) / im.bs
	for i := int64(0); i < nblocks; i++ {
		off, n := (in.blkaddr+i)*im.bs, min(im.bs, in.size-i*im.bs)
		if in.layout == layoutInline && i == nblocks-1 {
			off = in.tailOff
		}
		blk := make([]byte, n)
		if _, err := im.f.ReadAt(blk, off); err != nil {
			return err
		}
		found, err := repointBlock(blk, names)
		if err != nil {
			return err
		}
		if found > 0 {
			if _, err := im.f.WriteAt(blk, off); err != nil {
				return err
			}
			done += found
		}
	}
	if done != len(names) {
		return fmt.Errorf("%d of %d names not found", len(names)-done, len(names))
	}
	return nil
}

// repointBlock rewrites the nids of the entries of one directory block
// named in names, returning how many it found.
func repointBlock(blk []byte, names map[string]uint64) (int, error) {
	if len(blk) < direntSize {
		return 0, fmt.Errorf("directory block of %d bytes", len(blk))
	}
	first := int(binary.LittleEndian.Uint16(blk[8:10]))
	if first%direntSize != 0 || first == 0 || first > len(blk) {
		return 0, fmt.Errorf("bad directory block (first name at %d)", first)
	}
	n, found := first/direntSize, 0
	for i := range n {
		d := blk[i*direntSize:]
		start, end := int(binary.LittleEndian.Uint16(d[8:10])), len(blk)
		if i+1 < n {
			end = int(binary.LittleEndian.Uint16(blk[(i+1)*direntSize+8:]))
		}
		if start < first || end < start || end > len(blk) {
			return 0, fmt.Errorf("bad directory entry %d", i)
		}
		name := blk[start:end]
		if z := bytes.IndexByte(name, 0); z >= 0 {
			name = name[:z]
		}
		if target, ok := names[string(name)]; ok {
			binary.LittleEndian.PutUint64(d[0:8], target)
			found++
		}
	}
	return found, nil
}

// setNlink sets an inode's link count.
func (im *rawImage) setNlink(nid uint64, n uint32) error {
	in, err := im.inode(nid)
	if err != nil {
		return err
	}
	if in.extended {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], n)
		_, err = im.f.WriteAt(b[:], in.off+44)
		return err
	}
	if n > 0xffff {
		return fmt.Errorf("inode %d: %d links do not fit a compact inode", nid, n)
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], uint16(n))
	_, err = im.f.WriteAt(b[:], in.off+6)
	return err
}
