package unixsock

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// deepDir is a directory whose socket paths pass the kernel's limit, as a
// container's under Docker's runtime root do.
func deepDir(t *testing.T) string {
	d := filepath.Join(t.TempDir(), "moby", strings.Repeat("0123456789abcdef", 4), "vm")
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLongPathListenAndDial(t *testing.T) {
	for _, dir := range []string{t.TempDir(), deepDir(t)} {
		p := filepath.Join(dir, "share.sock")
		l, err := Listen(p)
		if err != nil {
			t.Fatalf("listen on a %d-byte path: %v", len(p), err)
		}
		if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("no socket at %s: %v", p, err)
		}
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		c, err := Dial(context.Background(), p)
		if err != nil {
			t.Fatalf("dial a %d-byte path: %v", len(p), err)
		}
		if b, _ := io.ReadAll(c); string(b) != "hi" {
			t.Errorf("read %q", b)
		}
		c.Close()
		l.Close()
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("closing the listener removed the socket (the caller does): %v", err)
		}
	}
}

func TestListenFileReplacesStaleSocketAndDialFile(t *testing.T) {
	p := filepath.Join(deepDir(t), "qmp.sock")
	for i := 0; i < 2; i++ { // the second replaces the first's file
		f, err := ListenFile(p)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cf, err := DialFile(context.Background(), p)
		if err != nil {
			t.Fatalf("round %d: dial: %v", i, err)
		}
		cf.Close()
		l.Close()
	}
}

func TestErrors(t *testing.T) {
	dir := deepDir(t)
	_, err := Dial(context.Background(), filepath.Join(dir, "none.sock"))
	if !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), filepath.Join(dir, "none.sock")) {
		t.Errorf("dial a missing socket: %v (want ENOENT naming the path)", err)
	}
	_, err = Listen(filepath.Join(dir, "gone", "x.sock"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("listen in a missing directory: %v", err)
	}
	long := filepath.Join(dir, strings.Repeat("n", 100)+".sock")
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a name no directory descriptor can shorten: %v", err)
	}
}

// A pair's ends are connected both ways.
func TestPair(t *testing.T) {
	mine, theirs, err := Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	defer theirs.Close()
	theirs.Write([]byte("ping"))
	b := make([]byte, 4)
	if n, err := mine.Read(b); err != nil || string(b[:n]) != "ping" {
		t.Errorf("read %q, %v", b[:n], err)
	}
}
