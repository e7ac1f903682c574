package agent

import (
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/lodgeruntime/lodge/internal/transport"
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
	transport.Splice(st, c)
}
