package testbundle

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

// FloodScript is a shell command line that writes outN bytes of outLine
// repeated to stdout and errN bytes of errLine to stderr at the same time
// (lines without their newline; `yes` adds it).
func FloodScript(outLine string, outN int64, errLine string, errN int64) string {
	return fmt.Sprintf("yes %s | head -c %d & yes %s | head -c %d >&2; wait", outLine, outN, errLine, errN)
}

// CheckRepeated reads r to its end and fails unless it is exactly n bytes
// of line+"\n" repeated: a stream that arrived whole and unmixed.
func CheckRepeated(r io.Reader, line string, n int64) error {
	br := bufio.NewReaderSize(r, 1<<20)
	want := []byte(line + "\n")
	buf := make([]byte, len(want))
	var got int64
	for {
		k, err := io.ReadFull(br, buf)
		got += int64(k)
		if k > 0 && !bytes.Equal(buf[:k], want[:k]) {
			return fmt.Errorf("byte %d: %q is not %q: the stream is corrupt or mixed", got-int64(k), buf[:k], want[:k])
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if got != n {
		return fmt.Errorf("%d bytes of %q, want %d", got, strings.TrimSpace(line), n)
	}
	return nil
}
