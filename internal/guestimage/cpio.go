package guestimage

import (
	"fmt"
	"io"
	"io/fs"
)

// newcWriter writes the "newc" cpio format the kernel unpacks as initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte
// ASCII-hex header, the NUL-terminated name padded to 4 bytes, the data
// padded to 4 bytes, and a final "TRAILER!!!" entry.
type newcWriter struct {
	w     io.Writer
	ino   int64
	left  int64 // bytes of the current file still to write
	pad   int64 // padding after the current file
	count int64
}

// cpioHeader is one archive entry's metadata.
type cpioHeader struct {
	Name         string
	Mode         uint32 // type and permission bits as in stat(2)
	Size         int64
	Nlink        int64
	RMajor, RMin int64 // device numbers of a device node
}

// Mode type bits (stat(2)).
const (
	modeDir  = 0o040000
	modeChar = 0o020000
	modeReg  = 0o100000
)

func fileMode(m fs.FileMode) uint32 {
	t := uint32(modeReg)
	switch {
	case m.IsDir():
		t = modeDir
	case m&fs.ModeCharDevice != 0:
		t = modeChar
	}
	return t | uint32(m.Perm())
}

func (c *newcWriter) WriteHeader(h cpioHeader) error {
	if err := c.finish(); err != nil {
		return err
	}
	c.ino++
	nlink := h.Nlink
	if nlink == 0 {
		nlink = 1
		if h.Mode&modeDir == modeDir {
			nlink = 2
		}
	}
	// magic ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, h.Mode, 0, 0, nlink, 0, h.Size, 0, 0, h.RMajor, h.RMin, len(h.Name)+1, 0)
	if err := c.write([]byte(hdr + h.Name + "\x00")); err != nil {
		return err
	}
	if err := c.align(); err != nil {
		return err
	}
	c.left, c.pad = h.Size, (4-h.Size%4)%4
	return nil
}

func (c *newcWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("cpio: write of %d bytes exceeds the entry's size", len(p))
	}
	n, err := c.w.Write(p)
	c.left -= int64(n)
	c.count += int64(n)
	return n, err
}

func (c *newcWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.count += int64(n)
	return err
}

func (c *newcWriter) align() error {
	if r := c.count % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

func (c *newcWriter) finish() error {
	if c.left != 0 {
		return fmt.Errorf("cpio: entry is %d bytes short", c.left)
	}
	return c.align()
}

// Close writes the trailer.
func (c *newcWriter) Close() error {
	if err := c.WriteHeader(cpioHeader{Name: "TRAILER!!!", Nlink: 1}); err != nil {
		return err
	}
	return c.finish()
}
