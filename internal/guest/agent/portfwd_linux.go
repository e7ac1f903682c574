package agent

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// dialTimeout bounds a forwarded connection's connect in the guest.
const dialTimeout = 10 * time.Second

// forwardPort connects a host stream to 127.0.0.1:port in the guest's
// network namespace (the pod's) and copies both ways until both sides
// are done. This is what `kubectl port-forward` reaches.
func forwardPort(st net.Conn, port uint16, log *slog.Logger) {
	defer st.Close()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), dialTimeout)
	if err != nil {
		log.Info("port forward", "port", port, "err", err)
		return
	}
	defer c.Close()
	transport.Splice(st, c)
}

// forwardContainerPort connects a host stream to 127.0.0.1:port in the
// network namespace of container id (lodge port-forward, the sandbox
// service's ports: a container with a namespace of its own, --network
// none, has its servers there and not in the guest's). It answers a
// status line first, so that the host can tell "nothing listens" from a
// connection the server closed.
func (cs *containers) forwardContainerPort(st net.Conn, id string, port uint16, log *slog.Logger) {
	defer st.Close()
	c, err := cs.dialIn(id, port)
	if err != nil {
		log.Info("port forward", "container_id", id, "port", port, "err", err)
		st.Write([]byte(oneLine(err.Error()) + "\n"))
		return
	}
	defer c.Close()
	if _, err := st.Write([]byte(transport.PortStatusOK + "\n")); err != nil {
		return
	}
	transport.Splice(st, c)
}

// firstPid is the PID of container id's first process.
func (cs *containers) firstPid(id string) (int, error) {
	c, err := cs.get(id)
	if err != nil {
		return 0, fmt.Errorf("container %s: %w", id, errNotFound)
	}
	p, err := c.proc("")
	if err != nil || p.pid <= 0 {
		return 0, fmt.Errorf("container %s has no process", id)
	}
	return p.pid, nil
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// dialIn connects to 127.0.0.1:port from the network namespace of
// container id's first process: the socket is made on a thread that has
// joined that namespace, and keeps it wherever its goroutine runs next.
func (cs *containers) dialIn(id string, port uint16) (net.Conn, error) {
	pid, err := cs.firstPid(id)
	if err != nil {
		return nil, err
	}
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("container %s: its network namespace: %w", id, err)
	}
	defer target.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))

	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// This goroutine's thread changes namespace: it never runs
		// anything else, and dies with the goroutine if it cannot go back.
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, err}
			return
		}
		defer own.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{nil, fmt.Errorf("join the network namespace of container %s: %w", id, err)}
			return
		}
		c, err := net.DialTimeout("tcp", addr, dialTimeout)
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		if err != nil {
			err = fmt.Errorf("connect to %s: %w", addr, unwrapDial(err))
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// unwrapDial keeps what the user acts on: "connection refused" rather than
// "dial tcp 127.0.0.1:8080: connect: connection refused".
func unwrapDial(err error) error {
	if se, ok := err.(*net.OpError); ok && se.Err != nil {
		if sc, ok := se.Err.(*os.SyscallError); ok {
			return sc.Err
		}
		return se.Err
	}
	return err
}
