package runtimecli

import (
	"net"
	"testing"
	"time"
)

func closedWithin(c <-chan struct{}, d time.Duration) bool {
	select {
	case <-c:
		return true
	case <-time.After(d):
		return false
	}
}

// The supervisor ends once its task API clients have hung up: idle is
// closed when no accepted connection is open, and not before.
func TestOpenConnsIdleWhenClientsHangUp(t *testing.T) {
	t.Parallel()
	var o openConns
	if !closedWithin(o.idle(), time.Second) {
		t.Fatal("no connection ever: not idle")
	}
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackedListener{Listener: ln, conns: &o}
	defer tl.Close()
	var clients []net.Conn
	var servers []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("unix", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		sc, err := tl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, sc)
	}
	idle := o.idle()
	servers[0].Close()
	servers[0].Close() // twice counts once
	if closedWithin(idle, 100*time.Millisecond) {
		t.Fatal("idle with a connection still open")
	}
	servers[1].Close()
	if !closedWithin(idle, time.Second) {
		t.Fatal("not idle once every connection closed")
	}
	for _, c := range clients {
		c.Close()
	}
}
