package agent

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

// forwardPort connects a host stream to 127.0.0.1:port in the guest's
// network namespace (the pod's) and copies both ways until both sides
// are done. This is what `kubectl port-forward` reaches.
func forwardPort(st net.Conn, port uint16, log *slog.Logger) {
	defer st.Close()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), 10*time.Second)
	if err != nil {
		log.Info("port forward", "port", port, "err", err)
		return
	}
	defer c.Close()
	splice(st, c)
}

// halfCloser is a connection whose write side can be closed alone.
type halfCloser interface {
	CloseWrite() error
}

// splice copies a<->b; each direction's end closes the other side's
// writes, so a request/response protocol sees EOF in order.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
