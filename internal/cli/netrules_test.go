package cli

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A list Lodge writes leaves NAT and forwarding to Lodge, with its subnet
// and bridge, and says whether it is internal; one with the firewall
// plugin or the bridge's ipMasq (written before) leaves them to its
// plugins.
func TestConfRules(t *testing.T) {
	conf := bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1", netMode{})
	if got := confRules([]byte(conf)); got != (netPolicy{subnet: "10.93.0.0/16", bridge: "lodge-n"}) {
		t.Errorf("Lodge's list: %+v, want its subnet and bridge", got)
	}
	if got := confRules([]byte(bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1", netMode{internal: true}))); got != (netPolicy{subnet: "10.93.0.0/16", bridge: "lodge-n", internal: true}) {
		t.Errorf("an internal network's list: %+v", got)
	}
	noICC := bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1", netMode{noICC: true})
	if got := confRules([]byte(noICC)); got != (netPolicy{subnet: "10.93.0.0/16", bridge: "lodge-n", noICC: true}) || !strings.Contains(noICC, `"lodge": {"icc":false},`) {
		t.Errorf("a network without inter-container traffic: %+v\n%s", got, noICC)
	}
	legacy := strings.Replace(conf, `"ipMasq": false`, `"ipMasq": true`, 1)
	if got := confRules([]byte(legacy)); got.subnet != "" {
		t.Errorf("a list with ipMasq: %+v, want its plugins' rules", got)
	}
	firewall := strings.Replace(conf, `{"type": "portmap"`, `{"type": "firewall"}, {"type": "portmap"`, 1)
	if got := confRules([]byte(firewall)); got.subnet != "" {
		t.Errorf("a list with the firewall plugin: %+v, want its plugins' rules", got)
	}
	for _, bad := range []string{"", "{", bridgeConf("n", "b", "10.93.0.1/16", "10.93.0.1", netMode{}), bridgeConf("n", "b", "nope", "x", netMode{})} {
		if got := confRules([]byte(bad)); got.subnet != "" {
			t.Errorf("confRules(%q) = %+v, want none", bad, got)
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
	pa, pb := netPolicy{subnet: "198.51.100.0/24", bridge: "unit-a"}, netPolicy{subnet: "203.0.113.0/24", bridge: "unit-b"}
	defer removeNetworkRules(ctx, a, pa)
	defer removeNetworkRules(ctx, b, pb)
	count := func() (int, int) {
		out, err := exec.Command("iptables-save").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(out), `"lodge network unit-a"`), strings.Count(string(out), `"lodge network unit-b"`)
	}
	for i := 0; i < 2; i++ {
		if err := ensureNetworkRules(ctx, a, pa); err != nil {
			t.Fatal(err)
		}
		if err := ensureNetworkRules(ctx, b, pb); err != nil {
			t.Fatal(err)
		}
		if na, nb := count(); na != 4 || nb != 4 {
			t.Fatalf("after %d ensures: %d and %d rules, want 4 each", i+1, na, nb)
		}
	}
	out, _ := exec.Command("iptables-save").Output()
	saved := parseSave(out)
	for _, r := range append(networkRules(a, pa), jumpRules...) {
		if !saved.has(r) {
			t.Errorf("not found as iptables-save prints it: %v\n%s", r, out)
		}
	}
	if n := strings.Count(string(out), "-j "+forwardChain); n != 1 {
		t.Errorf("%d jumps to %s, want 1", n, forwardChain)
	}
	if err := removeNetworkRules(ctx, a, pa); err != nil {
		t.Fatal(err)
	}
	if na, nb := count(); na != 0 || nb != 4 {
		t.Errorf("after removing %s: %d and %d rules, want 0 and 4", a, na, nb)
	}
	if err := removeNetworkRules(ctx, a, pa); err != nil {
		t.Errorf("removing rules already gone: %v", err)
	}

	// An internal network's rules: at the top of Lodge's chain, ahead of
	// the other networks' accepts, in their order; once; and gone with it.
	in := netPolicy{subnet: "192.0.2.0/24", bridge: "unit-in", internal: true}
	defer removeNetworkRules(ctx, "unit-in", in)
	for i := 0; i < 2; i++ {
		if err := ensureNetworkRules(ctx, "unit-in", in); err != nil {
			t.Fatal(err)
		}
	}
	out, _ = exec.Command("iptables", "-w", "-S", forwardChain).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"-i unit-in -o unit-in", "-i unit-in -m", "-o unit-in -m"}
	if len(lines) < 4 {
		t.Fatalf("%s:\n%s", forwardChain, out)
	}
	for i, w := range want {
		if !strings.Contains(lines[i+1], w) { // lines[0] is -N
			t.Errorf("rule %d of %s is %q, want the internal network's %q first:\n%s", i+1, forwardChain, lines[i+1], w, out)
		}
	}
	if n := strings.Count(string(out), "lodge network unit-in"); n != 3 {
		t.Errorf("%d rules of the internal network, want 3", n)
	}
	if nat, _ := exec.Command("iptables", "-w", "-t", "nat", "-S").Output(); strings.Contains(string(nat), "unit-in") {
		t.Errorf("an internal network has NAT:\n%s", nat)
	}
	if err := removeNetworkRules(ctx, "unit-in", in); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("iptables-save").Output(); strings.Contains(string(out), "unit-in") {
		t.Errorf("rules left:\n%s", out)
	}
}

// --network and --ip as docker reads them: a name or name=NET,ip=ADDRESS,
// --ip the first network's; an address is asked of host-local through
// CNI_ARGS, and one outside the network's subnet is refused first.
func TestFixedAddresses(t *testing.T) {
	got, err := runNetworks([]string{"name=bridge,ip=10.87.0.9"}, "")
	if err != nil || len(got) != 1 || got[0] != (netReq{bridgeNetwork, "10.87.0.9"}) {
		t.Errorf("name=bridge,ip=: %+v, %v", got, err)
	}
	if got, err = runNetworks(nil, "10.87.0.9"); err != nil || got[0] != (netReq{bridgeNetwork, "10.87.0.9"}) {
		t.Errorf("--ip alone: %+v, %v", got, err)
	}
	for _, bad := range [][]string{{"name=bridge,alias=x"}, {"ip=10.87.0.9"}, {"name=bridge,ip=nope"}, {"none", "--ip"}} {
		ip := ""
		if bad[len(bad)-1] == "--ip" {
			bad, ip = bad[:len(bad)-1], "10.87.0.9"
		}
		if _, err := runNetworks(bad, ip); err == nil {
			t.Errorf("--network %q --ip %q accepted", bad, ip)
		}
	}
	if _, err := runNetworks([]string{"name=bridge,ip=10.87.0.9"}, "10.87.0.8"); err == nil {
		t.Error("two addresses for one network accepted")
	}
	conf := []byte(bridgeConf("n", "lodge-n", "10.93.0.0/16", "10.93.0.1", netMode{}))
	if args, err := ipArgs("n", conf, "10.93.1.2"); err != nil || len(args) != 2 || args[1] != [2]string{"IP", "10.93.1.2"} {
		t.Errorf("ipArgs: %v, %v", args, err)
	}
	if args, err := ipArgs("n", conf, ""); err != nil || args != nil {
		t.Errorf("no address: %v, %v", args, err)
	}
	for _, bad := range []string{"10.94.0.2", "10.93.0.0", "fd00::1", "x"} {
		if _, err := ipArgs("n", conf, bad); err == nil {
			t.Errorf("address %s accepted for 10.93.0.0/16", bad)
		}
	}
}
