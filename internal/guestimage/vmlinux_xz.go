package guestimage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
)

// xzMagic starts an XZ stream (the payload of an XZ bzImage).
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// extractXZ decodes the first XZ stream in bz that holds an ELF image. The
// kernel compresses with the x86 BCJ filter, which the pure-Go XZ readers
// lack, so this runs xz (xz-utils, Debian priority standard) with
// --single-stream: the kernel appends data after the stream.
func extractXZ(bz []byte) ([]byte, error) {
	if _, err := exec.LookPath("xz"); err != nil {
		return nil, fmt.Errorf("%w: the kernel is XZ-compressed and xz is missing (apt-get install xz-utils)", ErrNoVmlinux)
	}
	for off := 0; ; off++ {
		i := bytes.Index(bz[off:], xzMagic)
		if i < 0 {
			return nil, ErrNoVmlinux
		}
		off += i
		cmd := exec.Command("xz", "--decompress", "--stdout", "--single-stream")
		cmd.Stdin = bytes.NewReader(bz[off:])
		var out bytes.Buffer
		cmd.Stdout = &limitedWriter{w: &out, n: maxVmlinux}
		if err := cmd.Run(); err == nil && bytes.HasPrefix(out.Bytes(), []byte("\x7fELF")) {
			return out.Bytes(), nil
		}
	}
}

// limitedWriter fails once more than n bytes were written.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, errors.New("decompressed kernel too large")
	}
	l.n -= len(p)
	return l.w.Write(p)
}
