package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Every session on the agent channel starts with a synchronisation that
// lets either side skip bytes left over from an earlier session. A clone
// restored from a template resumes a guest that was, at the snapshot, in
// the middle of the template's session (or already past its end); the new
// host must not read the old session's bytes, nor the guest the new one's
// as the old one's.
//
//	host                                   guest (agent)
//	HELLO n  (again every 20 ms) ───────>  skips bytes until "LODGE-HELLO "
//	                                       (an old session still running
//	                                       reads a HELLO as garbage and ends)
//	skips bytes until READY n  <────────   READY n
//	START n  ───────────────────────────>  skips bytes (more HELLOs) until START n
//	yamux client                           yamux server
//
// n is a fresh random nonce per session, so no earlier session's READY or
// START can be taken for this one's.
const (
	syncHello = "LODGE-HELLO "
	syncReady = "LODGE-READY "
	syncStart = "LODGE-START "
	nonceLen  = 32 // hex digits
)

// helloInterval is how often the host repeats its HELLO until the guest
// answers. In a clone the first HELLO usually ends the template's session
// (see above), and the agent, listening again, answers the next one: the
// interval is what every clone's start waits for that (250 ms cost each
// clone ~0.25 s). A cold boot buffers one HELLO (45 bytes) per interval
// until the agent listens: ~7 KB over a 3 s boot.
const helloInterval = 20 * time.Millisecond

// ErrSync reports a session that did not synchronise.
var ErrSync = errors.New("agent channel synchronisation failed")

// HostSync synchronises a new session on conn (see above) and returns the
// connection to run the session on. It gives up when ctx ends.
func HostSync(ctx context.Context, conn net.Conn) (net.Conn, error) {
	var b [nonceLen / 2]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(helloInterval)
		defer t.Stop()
		for {
			if _, err := io.WriteString(conn, syncHello+nonce+"\n"); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	unblock := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReader(conn)
	err := scanFor(br, []byte(syncReady+nonce+"\n"))
	close(stop)
	wg.Wait() // no HELLO may follow START
	if !unblock() || ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ErrSync, context.Cause(ctx))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSync, err)
	}
	conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, syncStart+nonce+"\n"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSync, err)
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// GuestSync is the agent's side: it waits for a host's HELLO, answers and
// returns the channel to run the session on (its reads start with what the
// synchronisation buffered).
func GuestSync(rw io.ReadWriteCloser) (io.ReadWriteCloser, error) {
	br := bufio.NewReader(rw)
	if err := scanFor(br, []byte(syncHello)); err != nil {
		return nil, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) != nonceLen+1 {
		return nil, fmt.Errorf("%w: malformed hello", ErrSync)
	}
	nonce := string(line[:nonceLen])
	if _, err := hex.DecodeString(nonce); err != nil {
		return nil, fmt.Errorf("%w: malformed hello", ErrSync)
	}
	if _, err := io.WriteString(rw, syncReady+nonce+"\n"); err != nil {
		return nil, err
	}
	if err := scanFor(br, []byte(syncStart+nonce+"\n")); err != nil {
		return nil, err
	}
	return &bufferedRWC{ReadWriteCloser: rw, r: br}, nil
}

type bufferedRWC struct {
	io.ReadWriteCloser
	r *bufio.Reader
}

func (c *bufferedRWC) Read(p []byte) (int, error) { return c.r.Read(p) }

// scanFor reads r until pat has been read (and consumed).
func scanFor(r *bufio.Reader, pat []byte) error {
	win := make([]byte, 0, len(pat))
	for {
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		if len(win) == len(pat) {
			copy(win, win[1:])
			win = win[:len(pat)-1]
		}
		win = append(win, c)
		if bytes.Equal(win, pat) {
			return nil
		}
	}
}

// bufferedConn reads what the synchronisation buffered before the rest.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
