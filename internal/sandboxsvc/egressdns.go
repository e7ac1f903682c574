package sandboxsvc

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lodgeruntime/lodge/internal/netsetup"
	"golang.org/x/net/dns/dnsmessage"
)

// Names in allow_out reach every port, not only 80 and 443, through the
// service's resolver: a sandbox with names has its DNS (UDP and TCP port
// 53, whatever server it asks: lodge run --egress-dns) sent to it, and it
// asks the service's upstream (--egress-resolver, else the host's). Before
// it hands back an answer to a question about a name the sandbox allows,
// it adds the answer's IPv4 addresses to the sandbox's set (its
// container's ipset, which its egress chain lets through before its deny
// list), each for as long as the answer says it holds (at least a minute,
// at most a day) and a minute more, so that a client that reuses a cached
// answer still reaches it. Never an address the service denies, a
// loopback, link-local, multicast or unspecified one. Connections already
// open outlive their address's time (the chain lets established ones
// through first). What other names resolve to is answered and added to
// nothing: those go by the address lists. As with any allow list by
// address, what an allowed name resolves to may be reached whatever name
// the sandbox uses for it later (as Cilium's FQDN policies).

// dnsLimits: the longest a query waits for the upstream, the most queries
// (and TCP connections) in flight, and the bounds of the time an address
// is kept.
const (
	dnsTimeout  = 5 * time.Second
	dnsInFlight = 256
	dnsMinTTL   = time.Minute
	dnsMaxTTL   = 24 * time.Hour
	dnsGrace    = time.Minute
)

// addToSet adds ip to a container's set for ttl (a seam for tests).
type addToSet func(set string, ip netip.Addr, ttl time.Duration) error

// ipsetAdd adds ip to the ipset named set, replacing its time if it is
// there.
func ipsetAdd(set string, ip netip.Addr, ttl time.Duration) error {
	secs := uint32(ttl / time.Second)
	return netlink.IpsetAdd(set, &netlink.IPSetEntry{IP: ip.AsSlice(), Timeout: &secs, Replace: true})
}

// ServeEgressDNS answers sandboxes' DNS on pc (UDP) and ln (TCP) through
// upstream (HOST:PORT) until both are closed; add is nil for the host's
// ipsets.
func (s *Service) ServeEgressDNS(pc net.PacketConn, ln net.Listener, upstream string, add addToSet) error {
	if add == nil {
		add = ipsetAdd
	}
	// Queries in flight over UDP and connections over TCP share the
	// slots: a sandbox cannot hold more of the service than that.
	slots := make(chan struct{}, dnsInFlight)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case slots <- struct{}{}:
			default:
				c.Close()
				continue
			}
			go func() {
				defer func() { <-slots }()
				s.dnsOverTCP(c, upstream, add)
			}()
		}
	}()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		sb, ok := s.dnsClient(from)
		if !ok {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // as a lost datagram: its client asks again
		}
		query := slices.Clone(buf[:n])
		go func() {
			defer func() { <-slots }()
			reply, err := exchangeUDP(query, upstream)
			if err != nil {
				return
			}
			s.learn(sb, reply, add)
			pc.WriteTo(reply, from)
		}()
	}
}

// dnsClient is the sandbox a query came from (none: it is not one of the
// service's, and gets no answer).
func (s *Service) dnsClient(from net.Addr) (Sandbox, bool) {
	ap, err := netip.ParseAddrPort(from.String())
	if err != nil {
		return Sandbox{}, false
	}
	return s.sandboxAt(ap.Addr().Unmap())
}

// exchangeUDP asks upstream query over UDP and returns its reply (a
// truncated one too: the client then asks again over TCP).
func exchangeUDP(query []byte, upstream string) ([]byte, error) {
	c, err := net.DialTimeout("udp", upstream, dnsTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dnsTimeout))
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		// The reply to this query (its ID), not a stray datagram.
		if n >= 2 && len(query) >= 2 && buf[0] == query[0] && buf[1] == query[1] {
			return buf[:n], nil
		}
	}
}

// dnsOverTCP serves one client's TCP connection: each length-prefixed
// query is asked of upstream over a TCP connection of its own, in turn.
func (s *Service) dnsOverTCP(c net.Conn, upstream string, add addToSet) {
	defer c.Close()
	sb, ok := s.dnsClient(c.RemoteAddr())
	if !ok {
		return
	}
	var up net.Conn
	defer func() {
		if up != nil {
			up.Close()
		}
	}()
	for {
		c.SetDeadline(time.Now().Add(2 * dnsTimeout))
		query, err := readDNSTCP(c)
		if err != nil {
			return
		}
		if up == nil {
			if up, err = net.DialTimeout("tcp", upstream, dnsTimeout); err != nil {
				return
			}
		}
		up.SetDeadline(time.Now().Add(dnsTimeout))
		if err := writeDNSTCP(up, query); err != nil {
			return
		}
		reply, err := readDNSTCP(up)
		if err != nil {
			return
		}
		s.learn(sb, reply, add)
		if writeDNSTCP(c, reply) != nil {
			return
		}
	}
}

func readDNSTCP(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(n[:]))
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func writeDNSTCP(w io.Writer, msg []byte) error {
	_, err := w.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	return err
}

// learn adds to sb's set the IPv4 addresses reply gives for a name sb's
// allow_out names, if it names hosts.
func (s *Service) learn(sb Sandbox, reply []byte, add addToSet) {
	_, names := splitDests(sb.AllowOut)
	set := netsetup.EgressSet(sb.ContainerID)
	if len(names) == 0 || set == "" {
		return
	}
	var p dnsmessage.Parser
	h, err := p.Start(reply)
	if err != nil || !h.Response || h.RCode != dnsmessage.RCodeSuccess {
		return
	}
	q, err := p.Question()
	if err != nil {
		return
	}
	asked := strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
	if !slices.ContainsFunc(names, func(n string) bool { return nameMatches(n, asked) }) {
		return
	}
	p.SkipAllQuestions()
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			return
		}
		if rh.Type != dnsmessage.TypeA || rh.Class != dnsmessage.ClassINET {
			p.SkipAnswer()
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return
		}
		ip := netip.AddrFrom4(a.A)
		if slices.ContainsFunc(s.denied, func(d netip.Prefix) bool { return d.Contains(ip) }) ||
			ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			s.logRefusal(sb.ID, "name", asked, "address", ip.String(), "why", "the service denies it, or no sandbox may reach it")
			continue
		}
		ttl := min(max(time.Duration(rh.TTL)*time.Second, dnsMinTTL), dnsMaxTTL) + dnsGrace
		if err := add(set, ip, ttl); err != nil {
			s.log.Warn("egress resolver: an allowed name's address not let through", "sandbox_id", sb.ID, "name", asked, "address", ip, "err", err)
		}
	}
}
