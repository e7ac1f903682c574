package agent

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// listenInNewNetns listens on 127.0.0.1 in a network namespace of its
// own, on a thread that stays there until the test ends, and returns the
// listener and that thread's id (whose /proc entry names the namespace,
// as a container's first process would).
func listenInNewNetns(t *testing.T) (net.Listener, int) {
	type res struct {
		l   net.Listener
		tid int
		err error
	}
	ch := make(chan res)
	end := make(chan struct{})
	t.Cleanup(func() { close(end) })
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- res{err: err}
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			ch <- res{err: err}
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ch <- res{l, unix.Gettid(), err}
		<-end
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l, r.tid
}

// A port stream that names a container reaches its server in the
// container's own network namespace (where the guest's does not), after
// the status line; one that nothing answers gets the dial's error.
func TestForwardContainerPort(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	l, tid := listenInNewNetns(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "container heard "+line)
			c.Close()
		}
	}()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Fatalf("the test's own namespace reaches the container's server: the test proves nothing")
	}
	cs := &containers{byID: map[string]*container{"c1": {procs: map[string]*process{"": {pid: tid}}}}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	forward := func(id string, port uint16) string {
		host, guest := net.Pipe()
		go cs.forwardContainerPort(guest, id, port, log)
		go io.WriteString(host, "hello\n") // net.Pipe: a write waits for its reader
		b, _ := io.ReadAll(host)
		return string(b)
	}
	if got := forward("c1", port); got != transport.PortStatusOK+"\ncontainer heard hello\n" {
		t.Errorf("into the container: %q", got)
	}
	l2, _ := net.Listen("tcp", "127.0.0.1:0") // a free port in the container's namespace too, most likely
	free := uint16(l2.Addr().(*net.TCPAddr).Port)
	l2.Close()
	if got := forward("c1", free); !strings.Contains(got, "connection refused") || strings.HasPrefix(got, transport.PortStatusOK) {
		t.Errorf("nothing listening: %q, want the dial's error", got)
	}
	if got := forward("nope", port); !strings.Contains(got, "nope") {
		t.Errorf("no such container: %q", got)
	}
}
