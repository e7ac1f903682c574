package pty

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The master honours read deadlines (a reader of a terminal whose slave
// another process still holds can be let go), and the pair is connected.
func TestOpen(t *testing.T) {
	m, s, err := Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer m.Close()
	defer s.Close()
	m.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := m.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read past its deadline: %v", err)
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	m.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 16)
	if n, err := m.Read(b); err != nil || string(b[:n]) != "x" {
		t.Errorf("read %q, %v; want what the slave wrote", b[:n], err)
	}
	// SetSize is the slave's size; the master still honours deadlines.
	if err := SetSize(m, 132, 43); err != nil {
		t.Fatal(err)
	}
	if ws, err := unix.IoctlGetWinsize(int(s.Fd()), unix.TIOCGWINSZ); err != nil || ws.Col != 132 || ws.Row != 43 {
		t.Errorf("the slave's size: %+v, %v; want 132x43", ws, err)
	}
	m.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := m.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a read past its deadline after SetSize: %v", err)
	}
}
