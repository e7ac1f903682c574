package transport

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// syncResult is what GuestSync returned.
type syncResult struct {
	rwc io.ReadWriteCloser
	err error
}

// A new session synchronises past whatever an earlier session left on the
// channel in either direction: the agent's old replies before the host's
// view, the old host's bytes before the agent's.
func TestSyncSkipsAnEarlierSessionsBytes(t *testing.T) {
	t.Parallel()
	host, gdone := guestSyncing(t, func(guest net.Conn) {
		// The guest first writes what an old session left (a yamux frame,
		// a stale READY of another nonce), then reads like an old session
		// that takes the first HELLO as garbage.
		guest.Write([]byte("\x00\x01\x00\x02junk LODGE-READY 0123456789abcdef0123456789abcdef\n"))
		buf := make([]byte, 5)
		io.ReadFull(guest, buf)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hostSession(ctx, t, host, gdone)
}

// guestSyncing returns the host's end of a pipe whose guest end runs
// before (if set) and then GuestSync, which reports on the channel.
func guestSyncing(t *testing.T, before func(guest net.Conn)) (net.Conn, <-chan syncResult) {
	host, guest := net.Pipe()
	t.Cleanup(func() { host.Close(); guest.Close() })
	gdone := make(chan syncResult, 1)
	go func() {
		if before != nil {
			before(guest)
		}
		rwc, err := GuestSync(guest)
		gdone <- syncResult{rwc, err}
	}()
	return host, gdone
}

// hostSession synchronises the host's end of a session whose guest end
// GuestSync reports on gdone, and checks that each end then reads exactly
// what the other wrote.
func hostSession(ctx context.Context, t *testing.T, host net.Conn, gdone <-chan syncResult) {
	t.Helper()
	conn, err := HostSync(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	g := <-gdone
	if g.err != nil {
		t.Fatal(g.err)
	}
	go conn.Write([]byte("to guest"))
	b := make([]byte, 8)
	if _, err := io.ReadFull(g.rwc, b); err != nil || string(b) != "to guest" {
		t.Fatalf("guest read %q, %v", b, err)
	}
	go g.rwc.Write([]byte("to host!"))
	if _, err := io.ReadFull(conn, b); err != nil || string(b) != "to host!" {
		t.Fatalf("host read %q, %v", b, err)
	}
}

// A guest that never answers fails the host's sync when ctx ends.
func TestHostSyncGivesUp(t *testing.T) {
	t.Parallel()
	host, guest := net.Pipe()
	defer host.Close()
	go io.Copy(io.Discard, guest)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := HostSync(ctx, host); err == nil {
		t.Fatal("sync with a silent guest succeeded")
	}
}

// A malformed hello is refused, not trusted.
func TestGuestSyncRefusesMalformedHello(t *testing.T) {
	t.Parallel()
	for _, hello := range []string{"LODGE-HELLO short\n", "LODGE-HELLO " + strings.Repeat("z", 32) + "\n"} {
		host, guest := net.Pipe()
		go host.Write([]byte(hello))
		if _, err := GuestSync(guest); err == nil {
			t.Errorf("hello %q accepted", hello)
		}
		host.Close()
		guest.Close()
	}
}

// An agent parked by a template's host (synchronised, never started)
// answers the next host's first HELLO: a clone's host gets its session
// without the template's ever starting or ending.
func TestParkedGuestAnswersTheNextHost(t *testing.T) {
	t.Parallel()
	host, gdone := guestSyncing(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := HostPark(ctx, host); err != nil {
		t.Fatal(err)
	}
	// The template's host may have repeated its HELLO before it read READY.
	go host.Write([]byte("LODGE-HELLO 0123456789abcdef0123456789abcdef\n"))
	select {
	case g := <-gdone:
		t.Fatalf("a parked guest started a session (%v)", g.err)
	case <-time.After(100 * time.Millisecond):
	}
	hostSession(ctx, t, host, gdone)
}
