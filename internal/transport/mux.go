package transport

import (
	"io"
	"net"
	"time"

	"github.com/hashicorp/yamux"
)

// muxConfig is shared by both ends. Keepalives are off: a guest under TCG
// can stall for seconds, and liveness comes from QEMU's process state, not
// from pings.
func muxConfig(log io.Writer) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 0 // streams open without waiting for the ACK
	c.MaxStreamWindowSize = 1 << 20
	if log == nil {
		log = io.Discard
	}
	c.LogOutput = log
	return c
}

// Session is a multiplexed agent channel.
type Session = yamux.Session

// HostSession starts the host (client) end of the multiplexer on conn.
func HostSession(conn net.Conn) (*Session, error) {
	return yamux.Client(conn, muxConfig(nil))
}

// GuestSession starts the agent (server) end of the multiplexer on conn.
func GuestSession(conn io.ReadWriteCloser, log io.Writer) (*Session, error) {
	return yamux.Server(conn, muxConfig(log))
}

// Open opens a new stream on the host end and writes its header.
func Open(s *Session, h Header) (net.Conn, error) {
	st, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	if err := WriteHeader(st, h); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}
