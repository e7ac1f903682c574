package transport

import (
	"io"
	"net"
	"testing"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// TestSplice: a request reaches the far side with EOF after it, and the
// reply comes back after that, as port forwarding needs.
func TestSplice(t *testing.T) {
	t.Parallel()
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	go Splice(a, b)
	go func() {
		req, _ := io.ReadAll(server) // until the client's half-close
		server.Write(append([]byte("re:"), req...))
		server.Close()
	}()
	client.Write([]byte("ping"))
	client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "re:ping" {
		t.Fatalf("got %q, %v", got, err)
	}
}
