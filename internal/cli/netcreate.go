package cli

import (
	"fmt"
	"net"
	"strings"
)

// createNetwork writes network name's list: a bridge on subnet (""
// picks the next free 10.N.0.0/16) in mode.
func createNetwork(name, subnet string, mode netMode) error {
	if _, _, err := cniConfig(bridgeNetwork); err != nil { // the default's subnet is taken
		return err
	}
	existing, err := lodgeNetworks()
	if err != nil {
		return err
	}
	// A subnet is taken by another lodge network, or by any network
	// the host has an address on (another runtime's bridge: two
	// bridges with one subnet make its addresses unreachable).
	hostNets := hostSubnets()
	used := func(cidr string) bool {
		for _, l := range existing {
			if strings.Contains(string(l.Bytes), `"`+cidr+`"`) {
				return true
			}
		}
		_, c, err := net.ParseCIDR(cidr)
		for _, h := range hostNets {
			if err == nil && (h.Contains(c.IP) || c.Contains(h.IP)) {
				return true
			}
		}
		return false
	}
	for n := 88; subnet == "" && n < 255; n++ {
		if c := fmt.Sprintf("10.%d.0.0/16", n); !used(c) {
			subnet = c
		}
	}
	ip, ipn, err := net.ParseCIDR(subnet)
	if err != nil || ip.To4() == nil {
		return fmt.Errorf("--subnet %q: want an IPv4 CIDR such as 10.90.0.0/16", subnet)
	}
	if used(ipn.String()) {
		return fmt.Errorf("--subnet %s: another network uses it", ipn)
	}
	gw := ipn.IP.To4()
	gw = net.IPv4(gw[0], gw[1], gw[2], gw[3]+1)
	bridge := bridgeName(name)
	return writeNetwork(name, bridgeConf(name, bridge, ipn.String(), gw.String(), mode), false)
}

// networkOpts reads network create's -o options: docker's bridge
// driver's enable_icc, the one Lodge has; whether it is off.
func networkOpts(opts []string) (noICC bool, err error) {
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == iccOption && (v == "false" || v == "true"):
			noICC = v == "false"
		case k == iccOption:
			return false, fmt.Errorf("-o %s: want true or false", o)
		default:
			return false, fmt.Errorf("-o %s: lodge's bridge networks take %s=false alone", o, iccOption)
		}
	}
	return noICC, nil
}

// iccOption is docker's bridge option for traffic between containers.
const iccOption = "com.docker.network.bridge.enable_icc"
