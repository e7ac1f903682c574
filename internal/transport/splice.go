package transport

import (
	"io"
	"net"
	"sync"
)

// Splice copies a<->b until both directions end. When one direction ends
// the other side's writes are closed (CloseWrite where the connection has
// it; a multiplexed stream's Close is a half-close), so a request/response
// protocol sees EOF in order.
func Splice(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if hc, ok := dst.(interface{ CloseWrite() error }); ok {
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
