package sandboxsvc

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/testdns"
)

func dnsQuery(t *testing.T, name string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 4242, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// answerAddrs are the A records of a reply.
func answerAddrs(t *testing.T, reply []byte) []string {
	t.Helper()
	var p dnsmessage.Parser
	if _, err := p.Start(reply); err != nil {
		t.Fatalf("reply: %v", err)
	}
	p.SkipAllQuestions()
	var out []string
	for {
		if _, err := p.AnswerHeader(); err != nil {
			return out
		}
		a, _ := p.AResource()
		out = append(out, netip.AddrFrom4(a.A).String())
	}
}

// TestEgressDNS: a sandbox's DNS is answered through the upstream, and
// the addresses of names it allows (and only those) are let through for
// as long as their answer holds, never one the service denies.
func TestEgressDNS(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{AllowNetwork: true, EgressProxy: 3129, EgressDNS: 3153, DenyOut: []string{"169.254.0.0/16", "10.99.0.0/16"}})
	f.run.bridgeIP = "127.0.0.1" // the test's queries come from loopback
	f.create(t, CreateRequest{Network: "bridge", AllowOut: []string{"pypi.org", "*.pythonhosted.org"}, DenyOut: []string{"0.0.0.0/0"}})
	if e := f.run.created[0].Egress; e.DNS != 3153 || e.Proxy != 3129 {
		t.Errorf("its container's egress: %+v, want the proxy's and the resolver's ports", e)
	}
	upstream := testdns.ServeAll(t, map[string][]string{
		"pypi.org":                  {"151.101.0.223", "10.99.1.1", "127.0.0.2"},
		"files.pythonhosted.org":    {"151.101.1.63"},
		"evil.example":              {"203.0.113.66"},
		"pythonhosted.org.evil.com": {"203.0.113.67"},
	}, 30)
	var mu sync.Mutex
	added := map[string]time.Duration{}
	add := func(set string, ip netip.Addr, ttl time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		added[set+" "+ip.String()] = ttl
		return nil
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ln.Close()
	go f.svc.ServeEgressDNS(pc, ln, upstream, add)

	udp, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Dial("tcp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	ask := func(name string, overTCP bool) []string {
		t.Helper()
		buf := make([]byte, 1500)
		if overTCP {
			tcp.SetDeadline(time.Now().Add(5 * time.Second))
			writeDNSTCP(tcp, dnsQuery(t, name))
			reply, err := readDNSTCP(tcp)
			if err != nil {
				t.Fatalf("%s over TCP: %v", name, err)
			}
			return answerAddrs(t, reply)
		}
		udp.SetDeadline(time.Now().Add(5 * time.Second))
		udp.Write(dnsQuery(t, name))
		n, err := udp.Read(buf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return answerAddrs(t, buf[:n])
	}
	// Every name is answered as the upstream answers it.
	if got := ask("pypi.org", false); !slices.Equal(got, []string{"151.101.0.223", "10.99.1.1", "127.0.0.2"}) {
		t.Errorf("pypi.org: %v", got)
	}
	if got := ask("evil.example", false); !slices.Equal(got, []string{"203.0.113.66"}) {
		t.Errorf("evil.example: %v", got)
	}
	if got := ask("pythonhosted.org.evil.com", true); len(got) != 1 {
		t.Errorf("over TCP: %v", got)
	}
	if got := ask("files.pythonhosted.org", true); !slices.Equal(got, []string{"151.101.1.63"}) {
		t.Errorf("files.pythonhosted.org over TCP: %v", got)
	}
	set := netsetup.EgressSet(fmt.Sprintf("%064x", 1))
	want := map[string]time.Duration{
		// The TTL (30 s) raised to a minute, and a minute's grace.
		set + " 151.101.0.223": 2 * time.Minute,
		set + " 151.101.1.63":  2 * time.Minute,
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(added) != fmt.Sprint(want) {
		t.Errorf("let through: %v\nwant %v (not the denied 10.99.1.1, loopback, or names not allowed)", added, want)
	}

	// A query from an address no sandbox has is not answered.
	if _, ok := f.svc.dnsClient(&net.UDPAddr{IP: net.ParseIP("127.0.0.9"), Port: 53}); ok {
		t.Errorf("a query from no sandbox's address would be answered")
	}
}

// FuzzLearn: whatever an upstream's reply holds, learning from it never
// panics, and lets through only IPv4 addresses a sandbox may reach, and
// only for a question about a name it allows.
func FuzzLearn(f *testing.F) {
	build := func(name string, addrs ...string) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 1, Response: true})
		b.StartQuestions()
		n := dnsmessage.MustNewName(name + ".")
		b.Question(dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
		b.StartAnswers()
		for _, a := range addrs {
			b.AResource(dnsmessage.ResourceHeader{Name: n, Class: dnsmessage.ClassINET, TTL: 9}, dnsmessage.AResource{A: netip.MustParseAddr(a).As4()})
		}
		out, _ := b.Finish()
		return out
	}
	f.Add(build("pypi.org", "151.101.0.223", "169.254.169.254"))
	f.Add(build("x.pythonhosted.org", "127.0.0.1", "10.0.0.1"))
	f.Add(build("evil.example", "203.0.113.1"))
	f.Add([]byte{0, 1, 0x80, 0, 0, 1, 0, 1})
	svc, err := New(Config{Dir: f.TempDir(), DenyOut: []string{"169.254.0.0/16"}}, &fakeRunner{ctrs: map[string]string{}, owners: map[string]string{}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	sb := Sandbox{ID: "sbx-0123456789ab", ContainerID: strings.Repeat("c", 64), AllowOut: []string{"pypi.org", "*.pythonhosted.org", "192.0.2.0/24"}}
	f.Fuzz(func(t *testing.T, reply []byte) {
		var asked string
		var p dnsmessage.Parser
		if _, err := p.Start(reply); err == nil {
			if q, err := p.Question(); err == nil {
				asked = strings.TrimSuffix(strings.ToLower(q.Name.String()), ".")
			}
		}
		svc.learn(sb, reply, func(set string, ip netip.Addr, ttl time.Duration) error {
			if set != "lodge-eg-cccccccccccc" || !ip.Is4() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() ||
				ttl < dnsMinTTL+dnsGrace || ttl > dnsMaxTTL+dnsGrace {
				t.Errorf("let through %s %s for %v", set, ip, ttl)
			}
			if asked != "pypi.org" && !strings.HasSuffix(asked, ".pythonhosted.org") {
				t.Errorf("let through %s for a question about %q", ip, asked)
			}
			return nil
		})
	})
}
