package sandboxsvc

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/testdns"
)

func TestNames(t *testing.T) {
	for d, want := range map[string]bool{"pypi.org": true, "*.pythonhosted.org": true, "PyPI.org.": true, "localhost": true,
		"10.0.0.1": false, "10.0.0.0/8": false, "": false, "*.": false, "a..b": false, "-a.b": false, "a b": false, "a_b.c": false} {
		if isName(d) != want {
			t.Errorf("isName(%q) = %v", d, !want)
		}
	}
	for _, c := range []struct {
		pattern, host string
		want          bool
	}{{"pypi.org", "pypi.org", true}, {"pypi.org", "PYPI.ORG.", true}, {"pypi.org", "evilpypi.org", false}, {"pypi.org", "a.pypi.org", false},
		{"*.pythonhosted.org", "files.pythonhosted.org", true}, {"*.pythonhosted.org", "a.b.pythonhosted.org", true},
		{"*.pythonhosted.org", "pythonhosted.org", false}, {"*.pythonhosted.org", "xpythonhosted.org", false}} {
		if nameMatches(c.pattern, c.host) != c.want {
			t.Errorf("nameMatches(%q, %q) = %v", c.pattern, c.host, !c.want)
		}
	}
}

func TestSniffName(t *testing.T) {
	// A TLS client's first flight, as a sandbox's client sends it.
	var hello bytes.Buffer
	cc, sc := net.Pipe()
	go func() {
		tls.Client(cc, &tls.Config{ServerName: "files.pythonhosted.org"}).Handshake()
	}()
	sc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if got := sniffName(io.TeeReader(sc, &hello)); got != "files.pythonhosted.org" {
		t.Errorf("TLS: %q", got)
	}
	sc.Close()
	cc.Close()
	if hello.Len() == 0 || hello.Bytes()[0] != 0x16 {
		t.Errorf("the ClientHello read: % x", hello.Bytes())
	}
	for in, want := range map[string]string{
		"GET /simple/ HTTP/1.1\r\nHost: pypi.org:80\r\n\r\n": "pypi.org",
		"GET / HTTP/1.0\r\nHost: Example.test\r\n\r\nbody":   "Example.test",
		"SSH-2.0-OpenSSH_9.2\r\n":                            "",
		"\x16\x03\x01\x00\x05hello":                          "",
	} {
		if got := sniffName(strings.NewReader(in)); got != want {
			t.Errorf("sniffName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The proxy passes a sandbox's connection on to where its allowed name
// resolves (not where the sandbox sent it), with every byte the sandbox
// sent; it refuses a name not allowed, a destination the service denies
// and a connection from an address no sandbox has.
func TestEgressProxy(t *testing.T) {
	dns := testdns.Serve(t, map[string]string{"allowed.test": "192.0.2.10", "meta.test": "169.254.169.254", "lo.test": "127.0.0.1"})
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, dns)
	}}
	f := newFixture(t, Config{AllowNetwork: true, EgressProxy: 3129, DenyOut: []string{"169.254.0.0/16"}})
	f.run.bridgeIP = "127.0.0.1" // the proxy's tests connect from there
	f.create(t, CreateRequest{Network: "bridge", AllowOut: []string{"allowed.test", "198.51.100.0/24"}, DenyOut: []string{"0.0.0.0/0"}})
	if got := f.run.created[len(f.run.created)-1].Egress; got.Proxy != 3129 || len(got.Allow) != 1 || got.Allow[0] != "198.51.100.0/24" {
		t.Errorf("lodge run's egress for a request with a name: %+v", got)
	}

	// Upstream: whatever is dialled answers with what it was sent.
	var mu sync.Mutex
	var dialled []string
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, addr)
		mu.Unlock()
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			buf := make([]byte, 4096)
			n, _ := b.Read(buf)
			fmt.Fprintf(b, "upstream %s got %q", addr, buf[:n])
		}()
		return a, nil
	}
	try := func(dst, send string) (string, []string) {
		t.Helper()
		mu.Lock()
		dialled = nil
		mu.Unlock()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			f.svc.proxyEgress(c, netip.MustParseAddrPort(dst), resolver, dial)
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(send))
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _ := io.ReadAll(c)
		mu.Lock()
		defer mu.Unlock()
		return string(got), dialled
	}
	req := "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
	if got, d := try("203.0.113.9:80", req); len(d) != 1 || d[0] != "192.0.2.10:80" || !strings.Contains(got, `got "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"`) {
		t.Errorf("an allowed name sent elsewhere: dialled %v, got %q; want the name's address, every byte passed", d, got)
	}
	for _, c := range []struct{ dst, send, why string }{
		{"203.0.113.9:80", "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", "a name not allowed"},
		{"203.0.113.9:443", "not a name at all", "no name, a destination denied"},
		{"169.254.169.254:80", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "the service's deny set"},
		{"203.0.113.9:80", "GET / HTTP/1.1\r\nHost: meta.test\r\n\r\n", "a name not allowed, resolving into the deny set"},
	} {
		if got, d := try(c.dst, c.send); len(d) != 0 || got != "" {
			t.Errorf("%s: dialled %v, got %q; want nothing", c.why, d, got)
		}
	}
	if got, d := try("198.51.100.7:443", "\x16\x03\x01"); len(d) != 1 || d[0] != "198.51.100.7:443" || !strings.Contains(got, "upstream") {
		t.Errorf("an allowed CIDR: dialled %v, got %q", d, got)
	}
	// A name allowed whose address is the host's loopback or the
	// service's deny set is not reached through it.
	f.create(t, CreateRequest{Network: "bridge", AllowOut: []string{"*.test"}})
	f.svc.mu.Lock()
	for _, sb := range f.svc.boxes {
		if len(sb.AllowOut) == 2 {
			sb.IP = "127.0.0.2" // out of the way
		}
	}
	f.svc.mu.Unlock()
	for _, host := range []string{"meta.test", "lo.test"} {
		if got, d := try("203.0.113.9:80", "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); len(d) != 0 || got != "" {
			t.Errorf("%s, allowed by *.test: dialled %v, got %q; want nothing", host, d, got)
		}
	}
	f.svc.mu.Lock()
	for _, sb := range f.svc.boxes {
		sb.IP = "127.0.0.3"
	}
	f.svc.mu.Unlock()
	if got, d := try("203.0.113.9:80", req); len(d) != 0 || got != "" {
		t.Errorf("from an address no sandbox has: dialled %v, got %q", d, got)
	}
}

// One sandbox cannot take the host's sockets through the proxy: its
// connections at once are bounded, and a place given back is taken again.
func TestProxySlots(t *testing.T) {
	f := newFixture(t, Config{})
	for i := 0; i < maxProxied; i++ {
		if !f.svc.proxySlot("a", 1) {
			t.Fatalf("place %d refused", i)
		}
	}
	if f.svc.proxySlot("a", 1) {
		t.Error("a place past the bound")
	}
	if !f.svc.proxySlot("b", 1) {
		t.Error("another sandbox's place refused")
	}
	f.svc.proxySlot("a", -1)
	if !f.svc.proxySlot("a", 1) {
		t.Error("a place given back is not taken again")
	}
}

// A sandbox that knocks in a loop fills no log: the first refusals of a
// minute are logged, then one line says how many more there were.
func TestRefusalsLogged(t *testing.T) {
	var logb bytes.Buffer
	f := newFixture(t, Config{})
	f.svc.log = slog.New(slog.NewTextHandler(&logb, nil))
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	f.svc.now = func() time.Time { return now }
	for i := 0; i < 1000; i++ {
		f.svc.logRefusal("sbx-a", "dst", "192.0.2.1:443")
	}
	if n := strings.Count(logb.String(), `msg="egress refused"`); n != refusalsLogged {
		t.Errorf("%d refusals logged of 1000 in a minute, want %d", n, refusalsLogged)
	}
	now = now.Add(time.Minute)
	f.svc.logRefusal("sbx-a", "dst", "192.0.2.1:443")
	if !strings.Contains(logb.String(), "connections=980") || strings.Count(logb.String(), `msg="egress refused"`) != refusalsLogged+1 {
		t.Errorf("the next minute: %s", logb.String()[max(0, logb.Len()-400):])
	}
}
