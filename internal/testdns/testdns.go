// Package testdns is a DNS server for tests: it answers A queries for
// the names it is given, on 127.0.0.1 (UDP), and NXDOMAIN for the rest.
package testdns

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Serve answers for names (name -> IPv4 address) until the test ends and
// returns its address (HOST:PORT).
func Serve(t testing.TB, names map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply, ok := answer(buf[:n], names); ok {
				pc.WriteTo(reply, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func answer(query []byte, names map[string]string) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	h.Response, h.Authoritative = true, true
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	addr, ok := names[strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")]
	a, err := netip.ParseAddr(addr)
	if !ok || err != nil {
		h.RCode = dnsmessage.RCodeNameError
		b = dnsmessage.NewBuilder(nil, h)
	}
	b.StartQuestions()
	b.Question(q)
	if ok && err == nil && q.Type == dnsmessage.TypeA {
		b.StartAnswers()
		b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: a.As4()})
	}
	out, err := b.Finish()
	return out, err == nil
}
