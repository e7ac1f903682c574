package cli

import (
	"context"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/vishvananda/netlink"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestParseEgress(t *testing.T) {
	eg, err := parseEgress([]string{"192.0.2.7", "192.0.2.7/32"}, []string{"0.0.0.0/0", "10.1.2.3/8"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(eg.Allow, []string{"192.0.2.7/32"}) || !slices.Equal(eg.Deny, []string{"0.0.0.0/0", "10.0.0.0/8"}) {
		t.Errorf("parsed %+v", eg)
	}
	if eg, err := parseEgress(nil, nil); eg != nil || err != nil {
		t.Errorf("no flags: %+v, %v; want none", eg, err)
	}
	for _, bad := range []struct{ in, want string }{
		{"pypi.org", "a name's addresses change"},
		{"2001:db8::/32", "IPv6"},
		{"10.0.0.0/33", "not an IPv4 address or CIDR"},
		{"", "not an IPv4"},
	} {
		if _, err := parseEgress(nil, []string{bad.in}); err == nil || !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), "--deny-out") {
			t.Errorf("--deny-out %q: %v, want an error saying %q", bad.in, err, bad.want)
		}
	}
}

// A container's rules are a chain of its own, jumped to for each of its
// addresses from Lodge's FORWARD and INPUT chains; applying them again
// replaces them, and removing them leaves nothing of them (another
// container's stay).
func TestEgressRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("iptables not installed")
	}
	ctx := context.Background()
	a, b := "e0e0e0e0aaaa0000", "e0e0e0e0bbbb0000"
	defer removeEgress(ctx, a)
	defer removeEgress(ctx, b)
	save := func() string {
		out, err := exec.Command("iptables-save", "-t", "filter").Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if err := applyEgress(ctx, a, []string{"198.51.100.7", "203.0.113.7"}, &egress{Allow: []string{"192.0.2.0/24"}, Deny: []string{"0.0.0.0/0"}}); err != nil {
		t.Fatal(err)
	}
	if err := applyEgress(ctx, b, []string{"198.51.100.8"}, &egress{Deny: []string{"192.0.2.9/32"}}); err != nil {
		t.Fatal(err)
	}
	s := save()
	for _, want := range []string{
		"-A LODGE-FORWARD -s 198.51.100.7/32 -m comment --comment lodge-container-e0e0e0e0aaaa -j LODGE-EG-e0e0e0e0aaaa\n",
		"-A LODGE-INPUT -s 203.0.113.7/32 -m comment --comment lodge-container-e0e0e0e0aaaa -j LODGE-EG-e0e0e0e0aaaa\n",
		"-A LODGE-EG-e0e0e0e0aaaa -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n-A LODGE-EG-e0e0e0e0aaaa -d 192.0.2.0/24 -j RETURN\n-A LODGE-EG-e0e0e0e0aaaa -j REJECT --reject-with icmp-admin-prohibited\n",
		"-A LODGE-EG-e0e0e0e0bbbb -d 192.0.2.9/32 -j REJECT --reject-with icmp-admin-prohibited\n",
		`-A INPUT -m comment --comment "lodge containers" -j LODGE-INPUT`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in:\n%s", want, s)
		}
	}
	// Its next start, at another address, with another rule.
	if err := applyEgress(ctx, a, []string{"198.51.100.9"}, &egress{Deny: []string{"192.0.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	s = save()
	if strings.Count(s, "lodge-container-e0e0e0e0aaaa") != 2 || !strings.Contains(s, "-s 198.51.100.9/32") || strings.Contains(s, "198.51.100.7") ||
		strings.Count(s, "-A LODGE-EG-e0e0e0e0aaaa ") != 2 {
		t.Errorf("applied again: want only the new address's two jumps and the new chain:\n%s", s)
	}
	// With a proxy: its 80 and 443 go to the host's port, which it may
	// reach, as its resolver on 53.
	if err := applyEgress(ctx, a, []string{"198.51.100.9"}, &egress{Deny: []string{"0.0.0.0/0"}, Proxy: 3129, Resolvers: []string{"192.0.2.53"}}); err != nil {
		t.Fatal(err)
	}
	s = save()
	nat, _ := exec.Command("iptables-save", "-t", "nat").Output()
	for _, want := range []string{
		"-A LODGE-EG-e0e0e0e0aaaa -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 3129 -j RETURN\n",
		"-A LODGE-EG-e0e0e0e0aaaa -d 192.0.2.53/32 -p udp -m udp --dport 53 -j RETURN\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("with a proxy: missing %q in:\n%s", want, s)
		}
	}
	if want := "-A LODGE-PREROUTING -s 198.51.100.9/32 -p tcp -m multiport --dports 80,443 -m comment --comment lodge-container-e0e0e0e0aaaa -j REDIRECT --to-ports 3129\n"; !strings.Contains(string(nat), want) ||
		!strings.Contains(string(nat), `-A PREROUTING -m comment --comment "lodge containers" -j LODGE-PREROUTING`) {
		t.Errorf("with a proxy: nat has no redirect %q:\n%s", want, nat)
	}
	// With a resolver: its DNS, to any server, goes to the host's port,
	// which it may reach, and its set's addresses pass before its deny
	// list; the set is new at each apply and goes with the chain.
	if err := applyEgress(ctx, a, []string{"198.51.100.9"}, &egress{Allow: []string{"192.0.2.0/24"}, Deny: []string{"0.0.0.0/0"}, Proxy: 3129, DNS: 3153}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.IpsetAdd(netsetup.EgressSet(a), &netlink.IPSetEntry{IP: net.ParseIP("203.0.113.80"), Timeout: new(uint32(60))}); err != nil {
		t.Fatalf("the set: %v", err)
	}
	s = save()
	nat, _ = exec.Command("iptables-save", "-t", "nat").Output()
	for _, want := range []string{
		"-A LODGE-EG-e0e0e0e0aaaa -p udp -m addrtype --dst-type LOCAL -m udp --dport 3153 -j RETURN\n",
		"-A LODGE-EG-e0e0e0e0aaaa -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 3153 -j RETURN\n",
		"-A LODGE-EG-e0e0e0e0aaaa -d 192.0.2.0/24 -j RETURN\n-A LODGE-EG-e0e0e0e0aaaa -m set --match-set lodge-eg-e0e0e0e0aaaa dst -j RETURN\n-A LODGE-EG-e0e0e0e0aaaa -j REJECT",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("with a resolver: missing %q in:\n%s", want, s)
		}
	}
	for _, proto := range []string{"udp", "tcp"} {
		if want := "-A LODGE-PREROUTING -s 198.51.100.9/32 -p " + proto + " -m " + proto + " --dport 53 -m comment --comment lodge-container-e0e0e0e0aaaa -j REDIRECT --to-ports 3153\n"; !strings.Contains(string(nat), want) {
			t.Errorf("with a resolver: nat has no redirect %q:\n%s", want, nat)
		}
	}
	if err := applyEgress(ctx, a, []string{"198.51.100.9"}, &egress{Deny: []string{"0.0.0.0/0"}, Proxy: 3129, DNS: 3153}); err != nil {
		t.Fatal(err)
	}
	if r, err := netlink.IpsetList(netsetup.EgressSet(a)); err != nil || len(r.Entries) != 0 {
		t.Errorf("the set after its rules were applied again: %+v %v, want it empty", r, err)
	}
	if err := removeEgress(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.IpsetList(netsetup.EgressSet(a)); err == nil {
		t.Errorf("the set is left after removal")
	}
	if nat, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(nat), "e0e0e0e0aaaa") {
		t.Errorf("the redirect is left after removal:\n%s", nat)
	}
	if err := removeEgress(ctx, a); err != nil {
		t.Errorf("removed twice: %v", err)
	}
	s = save()
	if strings.Contains(s, "e0e0e0e0aaaa") {
		t.Errorf("left after removal:\n%s", s)
	}
	if strings.Count(s, "e0e0e0e0bbbb") != 7 { // the chain, its two rules, two jumps naming it twice
		t.Errorf("the other container's rules went too:\n%s", s)
	}
}
