package cli

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A list Lodge writes leaves NAT and forwarding to Lodge, with its subnet;
// one with the firewall plugin or the bridge's ipMasq (written before)
// leaves them to its plugins.
func TestConfRules(t *testing.T) {
	if got := confRules([]byte(bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1"))); got != "10.93.0.0/16" {
		t.Errorf("Lodge's list: %q, want its subnet", got)
	}
	legacy := strings.Replace(bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1"), `"ipMasq": false`, `"ipMasq": true`, 1)
	if got := confRules([]byte(legacy)); got != "" {
		t.Errorf("a list with ipMasq: %q, want its plugins' rules", got)
	}
	firewall := strings.Replace(bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1"), `{"type": "portmap"`, `{"type": "firewall"}, {"type": "portmap"`, 1)
	if got := confRules([]byte(firewall)); got != "" {
		t.Errorf("a list with the firewall plugin: %q, want its plugins' rules", got)
	}
	for _, bad := range []string{"", "{", bridgeConf("n", "b", "10.93.0.1/16", "10.93.0.1"), bridgeConf("n", "b", "nope", "x")} {
		if got := confRules([]byte(bad)); got != "" {
			t.Errorf("confRules(%q) = %q, want none", bad, got)
		}
	}
}

// The rules a network gets are installed once, found again as
// iptables-save prints them (so that a second join adds nothing), and
// go with the network; another network's stay.
func TestNetworkRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("iptables not installed")
	}
	ctx := context.Background()
	a, b := "unit-a", "unit-b" // subnets of TEST-NET-2 and -3: never routed
	defer removeNetworkRules(ctx, a, "198.51.100.0/24")
	defer removeNetworkRules(ctx, b, "203.0.113.0/24")
	count := func() (int, int) {
		out, err := exec.Command("iptables-save").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(out), `"lodge network unit-a"`), strings.Count(string(out), `"lodge network unit-b"`)
	}
	for i := 0; i < 2; i++ {
		if err := ensureNetworkRules(ctx, a, "198.51.100.0/24"); err != nil {
			t.Fatal(err)
		}
		if err := ensureNetworkRules(ctx, b, "203.0.113.0/24"); err != nil {
			t.Fatal(err)
		}
		if na, nb := count(); na != 4 || nb != 4 {
			t.Fatalf("after %d ensures: %d and %d rules, want 4 each", i+1, na, nb)
		}
	}
	out, _ := exec.Command("iptables-save").Output()
	saved := parseSave(out)
	for _, r := range append(networkRules(a, "198.51.100.0/24"), jumpRules...) {
		if !saved.has(r) {
			t.Errorf("not found as iptables-save prints it: %v\n%s", r, out)
		}
	}
	if n := strings.Count(string(out), "-j "+forwardChain); n != 1 {
		t.Errorf("%d jumps to %s, want 1", n, forwardChain)
	}
	if err := removeNetworkRules(ctx, a, "198.51.100.0/24"); err != nil {
		t.Fatal(err)
	}
	if na, nb := count(); na != 0 || nb != 4 {
		t.Errorf("after removing %s: %d and %d rules, want 0 and 4", a, na, nb)
	}
	if err := removeNetworkRules(ctx, a, "198.51.100.0/24"); err != nil {
		t.Errorf("removing rules already gone: %v", err)
	}
}
