package sandboxsvc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/lodgeruntime/lodge/internal/netsetup"
)

// Names in allow_out ("pypi.org", "*.pythonhosted.org") are decided by
// the service's egress proxy, as E2B's are: a sandbox with names has its
// TCP connections to ports 80 and 443 sent to the proxy (lodge run
// --egress-proxy: a REDIRECT on the host), which reads the name each
// asks for (a TLS ClientHello's server name, an HTTP request's Host),
// and opens the connection itself when the name is allowed, to the
// addresses the name has for the host's resolver, never to one the
// service denies. So a sandbox that sends an allowed name to another
// address reaches the name's, not its own choice. Other ports, and
// names not allowed, fall back to the lists of addresses.

// sniffLimit bounds what the proxy reads before it decides.
const sniffLimit = 16 << 10

// egressDial is how the proxy connects (a seam for tests).
type egressDial func(ctx context.Context, addr string) (net.Conn, error)

// ServeEgress runs the proxy on ln until it is closed (connections
// already passed on go on); resolver resolves allowed names (nil: the
// host's).
func (s *Service) ServeEgress(ln net.Listener, resolver *net.Resolver) error {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			tc, ok := c.(*net.TCPConn)
			if !ok {
				return
			}
			dst, err := netsetup.OriginalDst(tc)
			if err != nil {
				return
			}
			s.proxyEgress(c, dst, resolver, func(ctx context.Context, addr string) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", addr)
			})
		}()
	}
}

// proxyEgress serves one redirected connection c to dst.
func (s *Service) proxyEgress(c net.Conn, dst netip.AddrPort, resolver *net.Resolver, dial egressDial) {
	src, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return
	}
	if local, err := netip.ParseAddrPort(c.LocalAddr().String()); err == nil && local == dst {
		return // not redirected: a connection to the proxy itself
	}
	sb, ok := s.sandboxAt(src.Addr().Unmap())
	if !ok {
		return // not a sandbox of this service's
	}
	if !s.proxySlot(sb.ID, 1) {
		s.logRefusal(sb.ID, "dst", dst.String(), "why", fmt.Sprintf("%d connections through the proxy already", maxProxied))
		return
	}
	defer s.proxySlot(sb.ID, -1)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var seen bytes.Buffer
	name := sniffName(io.TeeReader(io.LimitReader(c, sniffLimit), &seen))
	c.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	targets, why := s.egressTargets(ctx, sb, dst, name, resolver)
	var up net.Conn
	for _, t := range targets {
		if up, err = dial(ctx, t.String()); err == nil {
			break
		}
	}
	cancel()
	if up == nil {
		if why == "" && err != nil {
			why = err.Error()
		}
		s.logRefusal(sb.ID, "dst", dst.String(), "name", name, "why", why)
		return
	}
	defer up.Close()
	if _, err := up.Write(seen.Bytes()); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(c, up)
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(up, c)
	if tc, ok := up.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
	<-done
}

// maxProxied bounds a sandbox's connections through the proxy at once.
const maxProxied = 256

// proxySlot takes (d 1) or gives back (d -1) one of sandbox id's places
// in the proxy; false when none is left.
func (s *Service) proxySlot(id string, d int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proxied == nil {
		s.proxied = map[string]int{}
	}
	if d > 0 && s.proxied[id] >= maxProxied {
		return false
	}
	if s.proxied[id] += d; s.proxied[id] <= 0 {
		delete(s.proxied, id)
	}
	return true
}

// refusalsLogged bounds the refusals logged per sandbox and minute: a
// sandbox that knocks in a loop must not fill the host's log.
const refusalsLogged = 20

// logRefusal logs a refused connection of sandbox id, the first
// refusalsLogged of each minute, then how many more there were.
func (s *Service) logRefusal(id string, args ...any) {
	s.mu.Lock()
	if s.refusals == nil {
		s.refusals = map[string]*refusals{}
	}
	r := s.refusals[id]
	now := s.now()
	if r == nil || now.Sub(r.since) >= time.Minute {
		if r != nil && r.n > refusalsLogged {
			s.log.Info("egress refused, not logged", "sandbox_id", id, "connections", r.n-refusalsLogged, "since", r.since.Format(time.RFC3339))
		}
		r = &refusals{since: now}
		s.refusals[id] = r
	}
	r.n++
	n := r.n
	s.mu.Unlock()
	if n <= refusalsLogged {
		s.log.Info("egress refused", append([]any{"sandbox_id", id}, args...)...)
	}
}

// refusals counts a sandbox's refused connections since a minute began.
type refusals struct {
	since time.Time
	n     int
}

// sandboxAt is the sandbox whose address is ip.
func (s *Service) sandboxAt(ip netip.Addr) (Sandbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sb := range s.boxes {
		if sb.IP != "" && sb.IP == ip.String() {
			return *sb, true
		}
	}
	return Sandbox{}, false
}

// egressTargets are where a sandbox's connection to dst asking for name
// may go, in order (none, and why, if nowhere).
func (s *Service) egressTargets(ctx context.Context, sb Sandbox, dst netip.AddrPort, name string, resolver *net.Resolver) ([]netip.AddrPort, string) {
	denied := s.denied
	allowCIDRs, names := splitDests(sb.AllowOut)
	allow, _ := parseDests("allow_out", allowCIDRs)
	deny, _ := parseDests("deny_out", sb.DenyOut)
	in := func(ps []netip.Prefix, a netip.Addr) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	a := dst.Addr()
	switch {
	case in(denied, a):
		return nil, "the service denies " + a.String()
	case in(allow, a):
		return []netip.AddrPort{dst}, ""
	case name != "" && slices.ContainsFunc(names, func(n string) bool { return nameMatches(n, name) }):
		addrs, err := resolver.LookupNetIP(ctx, "ip4", name)
		if err != nil {
			return nil, fmt.Sprintf("%s: %v", name, err)
		}
		var out []netip.AddrPort
		for _, r := range addrs {
			r = r.Unmap()
			if in(denied, r) || r.IsLoopback() || r.IsUnspecified() || r.IsMulticast() || r.IsLinkLocalUnicast() {
				continue
			}
			t := netip.AddrPortFrom(r, dst.Port())
			if r == a {
				out = slices.Insert(out, 0, t) // where the sandbox asked, if the name is there
			} else {
				out = append(out, t)
			}
		}
		if len(out) == 0 {
			return nil, name + " has no address a sandbox may reach"
		}
		return out, ""
	case !in(deny, a):
		return []netip.AddrPort{dst}, ""
	}
	return nil, fmt.Sprintf("%s (name %q) is denied", a, name)
}

// splitDests parts allow_out into addresses or CIDRs, and names.
func splitDests(in []string) (cidrs, names []string) {
	for _, d := range in {
		if isName(d) {
			names = append(names, strings.ToLower(strings.TrimSuffix(d, ".")))
		} else {
			cidrs = append(cidrs, d)
		}
	}
	return cidrs, names
}

// isName says whether an allow_out entry is a host name (or "*." and
// one): letters, digits, hyphens and dots, with a letter somewhere.
func isName(d string) bool {
	d = strings.TrimPrefix(strings.TrimSuffix(d, "."), "*.")
	if d == "" || len(d) > 253 || strings.Contains(d, "..") || strings.HasPrefix(d, ".") || strings.HasPrefix(d, "-") {
		return false
	}
	letter := false
	for _, r := range d {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			letter = true
		case r >= '0' && r <= '9' || r == '-' || r == '.':
		default:
			return false
		}
	}
	return letter
}

// nameMatches says whether host (as asked) is pattern's: the name
// itself, or for "*.example.com" any name under example.com.
func nameMatches(pattern, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return host == pattern
}

// sniffName reads the name a connection asks for: a TLS ClientHello's
// server name, or an HTTP request's Host (without its port); "" when it
// is neither.
func sniffName(r io.Reader) string {
	br := bufio.NewReaderSize(r, 4096)
	first, err := br.Peek(1)
	if err != nil {
		return ""
	}
	if first[0] == 0x16 { // a TLS handshake record
		var name string
		stop := errors.New("read")
		tls.Server(readOnlyConn{r: br}, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name = h.ServerName
			return nil, stop
		}}).Handshake()
		return name
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		return ""
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return host
}

// readOnlyConn is a net.Conn that reads from r and writes nowhere: the
// TLS server the ClientHello is parsed with.
type readOnlyConn struct {
	net.Conn
	r io.Reader
}

func (c readOnlyConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c readOnlyConn) Write(b []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c readOnlyConn) Close() error                     { return nil }
func (c readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (c readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (c readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
func (c readOnlyConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c readOnlyConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
