package pty

import (
	"errors"
	"os"
	"testing"
	"time"
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
}
