package transport

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzHostSync: whatever a guest sends while the host synchronises, the
// host returns (no hang past its context, no panic) and never takes it for
// the guest's READY, whose nonce the guest cannot know.
func FuzzHostSync(f *testing.F) {
	f.Add([]byte(syncReady + "00000000000000000000000000000000\n"))
	f.Add([]byte("LODGE-LODGE-READY LODGE-HELLO \n\n\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		host, guest := net.Pipe()
		defer host.Close()
		go func() {
			guest.Write(data)
			io.Copy(io.Discard, guest) // the HELLOs
		}()
		defer guest.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if c, err := HostSync(ctx, host); err == nil {
			c.Close()
			t.Fatalf("synchronised on %q", data)
		}
	})
}

// yamuxFrame is a frame header (version 0) and body as a guest could send.
func yamuxFrame(typ, flags uint8, stream, length uint32, body []byte) []byte {
	h := make([]byte, 12)
	h[1], h[2] = typ, 0
	binary.BigEndian.PutUint16(h[2:4], uint16(flags))
	binary.BigEndian.PutUint32(h[4:8], stream)
	binary.BigEndian.PutUint32(h[8:12], length)
	return append(h, body...)
}

// FuzzHostSession: the frames of the multiplexer from a guest (after a
// good synchronisation) never panic the host's session, and a stream's
// reads end when the session does.
func FuzzHostSession(f *testing.F) {
	f.Add(yamuxFrame(0, 0, 1, 5, []byte("hello")))                    // data on the host's stream
	f.Add(yamuxFrame(1, 0, 1, 1<<31, nil))                            // a window update of 2 GiB
	f.Add(yamuxFrame(0, 0, 1, 1<<30, []byte("more than the window"))) // a length past the window
	f.Add(yamuxFrame(0, 1, 2, 0, nil))                                // the guest opens a stream
	f.Add(yamuxFrame(3, 0, 0, 7, nil))                                // go away
	f.Fuzz(func(t *testing.T, data []byte) {
		host, guest := net.Pipe()
		defer host.Close()
		defer guest.Close()
		go func() {
			io.CopyN(io.Discard, guest, 12+13) // the host's SYN and header frame, roughly
			guest.Write(data)
			io.Copy(io.Discard, guest)
		}()
		s, err := HostSession(host)
		if err != nil {
			return
		}
		defer s.Close()
		st, err := Open(s, Header{Kind: KindStdout, ContainerID: "c"})
		if err != nil {
			return
		}
		// The host ends a session when its sandbox goes; a read deadline
		// alone is not enough: yamux reads a data frame's body under the
		// stream's lock, so a guest that announces a body and never sends
		// it holds a reader until the connection closes.
		stop := time.AfterFunc(20*time.Millisecond, func() { s.Close() })
		defer stop.Stop()
		buf := make([]byte, 1<<16)
		for {
			if _, err := st.Read(buf); err != nil {
				break
			}
		}
	})
}
