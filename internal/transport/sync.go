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
//	                                       reads a HELLO as garbage and ends;
//	                                       a parked agent answers at once)
//	skips bytes until READY n  <────────   READY n
//	START n  ───────────────────────────>  skips bytes (more HELLOs) until START n
//	yamux client                           yamux server
//
// n is a fresh random nonce per session, so no earlier session's READY or
// START can be taken for this one's. A HELLO with another nonce while the
// agent waits for START is a new host: the agent answers it instead. A
// template's host leaves its agent so, synchronised and never started
// (HostPark), so that each clone's host is answered at its first HELLO.
const (
	syncHello = "LODGE-HELLO "
	syncReady = "LODGE-READY "
	syncStart = "LODGE-START "
	nonceLen  = 32 // hex digits
)

// helloInterval is how often the host repeats its HELLO until the guest
// answers. A parked agent (a clone's) answers the first; an agent whose
// session was still running when the host came reads that HELLO as garbage,
// ends the session and answers the next, so the interval is what such a
// start waits for. A cold boot buffers one HELLO (45 bytes) per interval
// until the agent listens: ~7 KB over a 3 s boot.
const helloInterval = 20 * time.Millisecond

// ErrSync reports a session that did not synchronise.
var ErrSync = errors.New("agent channel synchronisation failed")

// HostPark synchronises as HostSync does but never starts the session:
// the agent is left waiting for a START that does not come, which the next
// host's HELLO overrides. A template's host parks its agent before the
// snapshot, so that a clone's agent answers its host's first HELLO instead
// of first ending a session. The caller keeps conn open until the VM is
// saved.
func HostPark(ctx context.Context, conn net.Conn) error {
	_, _, err := hostHello(ctx, conn)
	return err
}

// HostSync synchronises a new session on conn (see above) and returns the
// connection to run the session on. It gives up when ctx ends.
func HostSync(ctx context.Context, conn net.Conn) (net.Conn, error) {
	nonce, br, err := hostHello(ctx, conn)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(conn, syncStart+nonce+"\n"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSync, err)
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// hostHello sends HELLOs until the agent's READY: the first half of the
// synchronisation. It returns the session's nonce and the reader the rest
// of the session reads through.
func hostHello(ctx context.Context, conn net.Conn) (string, *bufio.Reader, error) {
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
		return "", nil, fmt.Errorf("%w: %w", ErrSync, context.Cause(ctx))
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w: %w", ErrSync, err)
	}
	conn.SetDeadline(time.Time{})
	return nonce, br, nil
}

// GuestSync is the agent's side: it waits for a host's HELLO, answers and
// returns the channel to run the session on (its reads start with what the
// synchronisation buffered). While it waits for START, a HELLO of another
// nonce (a new host) is answered in turn; repeats of the answered one are
// skipped.
func GuestSync(rw io.ReadWriteCloser) (io.ReadWriteCloser, error) {
	br := bufio.NewReader(rw)
	if err := scanFor(br, []byte(syncHello)); err != nil {
		return nil, err
	}
	nonce, err := readNonce(br)
	if err != nil {
		return nil, err
	}
	for nonce != "" {
		if _, err := io.WriteString(rw, syncReady+nonce+"\n"); err != nil {
			return nil, err
		}
		if nonce, err = awaitStart(br, nonce); err != nil {
			return nil, err
		}
	}
	return &bufferedRWC{ReadWriteCloser: rw, r: br}, nil
}

// awaitStart reads until the START of nonce ("" returned) or the HELLO of
// another nonce (that nonce returned).
func awaitStart(br *bufio.Reader, nonce string) (string, error) {
	for {
		i, err := scanForAny(br, []byte(syncStart+nonce+"\n"), []byte(syncHello))
		if err != nil {
			return "", err
		}
		if i == 0 {
			return "", nil
		}
		next, err := readNonce(br)
		if err != nil || next != nonce {
			return next, err
		}
	}
}

// readNonce reads the rest of a HELLO line: its nonce.
func readNonce(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) != nonceLen+1 {
		return "", fmt.Errorf("%w: malformed hello", ErrSync)
	}
	nonce := string(line[:nonceLen])
	if _, err := hex.DecodeString(nonce); err != nil {
		return "", fmt.Errorf("%w: malformed hello", ErrSync)
	}
	return nonce, nil
}

type bufferedRWC struct {
	io.ReadWriteCloser
	r *bufio.Reader
}

func (c *bufferedRWC) Read(p []byte) (int, error) { return c.r.Read(p) }

// scanFor reads r until pat has been read (and consumed).
func scanFor(r *bufio.Reader, pat []byte) error {
	_, err := scanForAny(r, pat)
	return err
}

// scanForAny reads r until one of pats has been read (and consumed) and
// says which.
func scanForAny(r *bufio.Reader, pats ...[]byte) (int, error) {
	longest := 0
	for _, p := range pats {
		longest = max(longest, len(p))
	}
	win := make([]byte, 0, longest)
	for {
		c, err := r.ReadByte()
		if err != nil {
			return -1, err
		}
		if len(win) == longest {
			copy(win, win[1:])
			win = win[:longest-1]
		}
		win = append(win, c)
		for i, p := range pats {
			if bytes.HasSuffix(win, p) {
				return i, nil
			}
		}
	}
}

// bufferedConn reads what the synchronisation buffered before the rest.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
