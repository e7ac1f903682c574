// Package testdns is a DNS server for tests: it answers A queries for
// the names it is given, on 127.0.0.1 (UDP and TCP, one port), and
// NXDOMAIN for the rest.
package testdns

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// Serve answers for names (name -> IPv4 address, TTL 5 s) until the test
// ends and returns its address (HOST:PORT).
func Serve(t testing.TB, names map[string]string) string {
	t.Helper()
	all := map[string][]string{}
	for n, a := range names {
		all[n] = []string{a}
	}
	return ServeAll(t, all, 5)
}

// ServeAll answers for names (name -> IPv4 addresses, in that order),
// each record with ttl seconds, as Serve does.
func ServeAll(t testing.TB, names map[string][]string, ttl uint32) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if reply, ok := answer(buf[:n], names, ttl); ok {
				pc.WriteTo(reply, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveTCP(c, names, ttl)
		}
	}()
	return pc.LocalAddr().String()
}

// serveTCP answers c's length-prefixed queries until it closes.
func serveTCP(c net.Conn, names map[string][]string, ttl uint32) {
	defer c.Close()
	for {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		reply, ok := answer(q, names, ttl)
		if !ok {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(reply))), reply...)); err != nil {
			return
		}
	}
}

func answer(query []byte, names map[string][]string, ttl uint32) ([]byte, bool) {
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
	addrs, ok := names[strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")]
	if !ok {
		h.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	b.StartQuestions()
	b.Question(q)
	if ok && q.Type == dnsmessage.TypeA {
		b.StartAnswers()
		for _, s := range addrs {
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}, dnsmessage.AResource{A: a.As4()})
			}
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
