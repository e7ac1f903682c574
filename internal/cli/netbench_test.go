package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBenchNetworkJoin is a benchmark (`make bench`; LODGE_BENCH_NET=1,
// root): a container's join and leave of a bridge network, host side only
// (joinBridge and leaveBridge, no VM), with Lodge's list (NAT and
// forwarding once per network) against the list Lodge wrote before,
// nerdctl's (the bridge plugin's ipMasq and the firewall plugin: each
// container's own iptables rules), and with Lodge's list for a container
// with egress rules, interleaved. It prints the medians and their ratios,
// and leaves neither network behind.
func TestBenchNetworkJoin(t *testing.T) {
	if os.Getenv("LODGE_BENCH_NET") == "" || os.Geteuid() != 0 {
		t.Skip("a benchmark: LODGE_BENCH_NET=1, as root")
	}
	runs := 12
	fmt.Sscan(os.Getenv("RUNS"), &runs)
	ctx := context.Background()
	for _, h := range hostSubnets() {
		if h.Contains(net.IPv4(10, 251, 0, 1)) || h.Contains(net.IPv4(10, 252, 0, 1)) {
			t.Fatalf("the host has a network on 10.251.0.0/16 or 10.252.0.0/16 (%s), which this benchmark uses", h)
		}
	}
	lists := map[string]string{
		"benchperctr": perContainerConf("benchperctr", "lodge-benchpc", "10.251.0.0/16", "10.251.0.1"),
		"benchlodge":  bridgeConf("benchlodge", "lodge-benchlg", "10.252.0.0/16", "10.252.0.1", netMode{}),
	}
	for name, body := range lists {
		if err := writeNetwork(name, body, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeNetwork(ctx, name) })
	}
	ms := map[string][]float64{}
	// The third variant is Lodge's list for a container with egress
	// rules (a sandbox's: all denied but one network, and the service's
	// deny set).
	eg := &egress{Allow: []string{"192.0.2.0/24"}, Deny: []string{"169.254.0.0/16", "0.0.0.0/0"}}
	variants := []struct {
		key, name string
		eg        *egress
	}{{"benchperctr", "benchperctr", nil}, {"benchlodge", "benchlodge", nil}, {"benchegress", "benchlodge", eg}}
	for i := 0; i < runs; i++ {
		for _, v := range variants {
			id := fmt.Sprintf("%064d", time.Now().UnixNano())
			t0 := time.Now()
			n, err := joinBridge(ctx, []netReq{{Name: v.name}}, id, nil, v.eg)
			if err != nil {
				t.Fatal(err)
			}
			t1 := time.Now()
			if err := leaveBridge(ctx, id, n); err != nil {
				t.Fatal(err)
			}
			ms[v.key+" join"] = append(ms[v.key+" join"], float64(t1.Sub(t0).Microseconds())/1000)
			ms[v.key+" leave"] = append(ms[v.key+" leave"], float64(time.Since(t1).Microseconds())/1000)
		}
	}
	med := func(k string) float64 {
		v := slices.Clone(ms[k])
		slices.Sort(v)
		return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
	}
	var b strings.Builder
	fmt.Fprintf(&b, "bridge network, a container's join and leave (host side; medians of %d, interleaved):\n", runs)
	for _, k := range []string{"join", "leave"} {
		fmt.Fprintf(&b, "  %-6s per-container rules %7.1f ms   Lodge's per-network rules %7.1f ms   ratio %.2f   with egress rules %7.1f ms (%.2f of without)\n",
			k, med("benchperctr "+k), med("benchlodge "+k), med("benchlodge "+k)/med("benchperctr "+k),
			med("benchegress "+k), med("benchegress "+k)/med("benchlodge "+k))
	}
	t.Log("\n" + b.String())
}

// perContainerConf is the list Lodge wrote before its own rules, as
// nerdctl writes it: the bridge plugin masquerades and the firewall plugin
// accepts each container's address, per container.
func perContainerConf(name, bridge, subnet, gateway string) string {
	s := strings.Replace(bridgeConf(name, bridge, subnet, gateway, netMode{}), `"ipMasq": false`, `"ipMasq": true`, 1)
	return strings.Replace(s, `{"type": "portmap", "capabilities": {"portMappings": true}}`,
		`{"type": "portmap", "capabilities": {"portMappings": true}},`+"\n    "+`{"type": "firewall"}`, 1)
}
