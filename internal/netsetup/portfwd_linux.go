package netsetup

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// PortForwarder serves what CRI's port forwarding dials: a TCP connection
// to localhost:PORT made inside the pod's network namespace on the host.
// The pod's servers live in the guest, so a nat rule in that namespace
// redirects every such connection to one listener of ours, which reads the
// original port (SO_ORIGINAL_DST) and connects to it in the guest.
type PortForwarder struct {
	NetNS string
	Port  int // the listener's port in the pod's namespace
	ln    net.Listener
	wg    sync.WaitGroup
}

// ForwardLocalhost starts forwarding in the namespace at path; dial
// connects to a port in the guest.
func ForwardLocalhost(path string, dial func(port uint16) (net.Conn, error), log *slog.Logger) (*PortForwarder, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open pod network namespace %s: %w", path, err)
	}
	defer ns.Close()
	pf := &PortForwarder{NetNS: path}
	// CNI's loopback plugin brings lo up; a namespace without it needs it
	// for the listener.
	if h, err := netlink.NewHandleAt(ns); err == nil {
		if lo, err := h.LinkByName("lo"); err == nil {
			h.LinkSetUp(lo)
		}
		h.Close()
	}
	err = inNetNS(ns, func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		pf.ln, pf.Port = ln, ln.Addr().(*net.TCPAddr).Port
		if out, err := exec.Command("iptables", redirectRule("-A", pf.Port)...).CombinedOutput(); err != nil {
			ln.Close()
			return fmt.Errorf("iptables: %w: %s", err, out)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("port forwarding in %s: %w", path, err)
	}
	pf.wg.Add(1)
	go pf.serve(dial, log)
	return pf, nil
}

// redirectRule sends TCP to 127.0.0.1 (except to our own port) to port.
func redirectRule(op string, port int) []string {
	p := strconv.Itoa(port)
	return []string{"-w", "5", "-t", "nat", op, "OUTPUT", "-o", "lo", "-p", "tcp", "-d", "127.0.0.1/32",
		"!", "--dport", p, "-m", "comment", "--comment", "lodge port-forward",
		"-j", "REDIRECT", "--to-ports", p}
}

func (pf *PortForwarder) serve(dial func(port uint16) (net.Conn, error), log *slog.Logger) {
	defer pf.wg.Done()
	for {
		c, err := pf.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			port, err := originalPort(c.(*net.TCPConn))
			if err != nil {
				log.Warn("port forward: original port", "err", err)
				return
			}
			g, err := dial(port)
			if err != nil {
				log.Warn("port forward: connect in the guest", "port", port, "err", err)
				return
			}
			defer g.Close()
			transport.Splice(c, g)
		}()
	}
}

// originalPort reads the destination port a redirected connection had.
func originalPort(c *net.TCPConn) (uint16, error) {
	d, err := OriginalDst(c)
	return d.Port(), err
}

// OriginalDst reads the destination a connection redirected by nat
// (REDIRECT, DNAT) had before it (IPv4: SO_ORIGINAL_DST).
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.RawSockaddrInet4
	var serr error
	err = rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(sa))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, unix.SOL_IP, 80, /* SO_ORIGINAL_DST */
			uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, err
	}
	// sin_port is in network byte order.
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1])), nil
}

// Close stops forwarding and removes the nat rule.
func (pf *PortForwarder) Close() error {
	pf.ln.Close()
	pf.wg.Wait()
	return RemoveRedirect(pf.NetNS, pf.Port)
}

// RemoveRedirect deletes the nat rule for port in the namespace at path
// (after a crash, from a record). A namespace that is gone took it along.
func RemoveRedirect(path string, port int) error {
	ns, err := netns.GetFromPath(path)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer ns.Close()
	return inNetNS(ns, func() error {
		if out, err := exec.Command("iptables", redirectRule("-D", port)...).CombinedOutput(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
				return nil // no such rule
			}
			return fmt.Errorf("iptables: %w: %s", err, out)
		}
		return nil
	})
}
