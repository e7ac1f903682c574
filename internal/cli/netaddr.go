package cli

// A container's addresses: those it asks for (--ip, name=NET,ip=), and
// the MAC address each interface gets from its IPv4 address.

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netReq is a network a container joins, with the address it asks for
// ("": one of the network's pool).
type netReq struct{ Name, IP string }

// reqs are the networks a container started again joins, as it joined.
func (n *ctrNetwork) reqs() []netReq {
	out := []netReq{{n.Name, n.FixedIP}}
	for _, l := range n.Extra {
		out = append(out, netReq{l.Name, l.FixedIP})
	}
	return out
}

// ipArgs are the CNI arguments that ask host-local for address ip of the
// network whose list is conf (none for ""). An address outside the
// network's subnet is refused here, in the network's words.
func ipArgs(name string, conf []byte, ip string) ([][2]string, error) {
	if ip == "" {
		return nil, nil
	}
	addr := net.ParseIP(ip).To4()
	if addr == nil {
		return nil, fmt.Errorf("network %s: address %q: want an IPv4 address", name, ip)
	}
	if subnet := confRules(conf).subnet; subnet != "" {
		_, n, _ := net.ParseCIDR(subnet)
		if !n.Contains(addr) || addr.Equal(n.IP) {
			return nil, fmt.Errorf("network %s: address %s is not one of its subnet %s", name, ip, subnet)
		}
	}
	return [][2]string{{"IgnoreUnknown", "1"}, {"IP", addr.String()}}, nil
}

// joinHint says what may have failed a join.
func joinHint(ip string) string {
	if ip != "" {
		return " (is the address another container's?)"
	}
	return " (are containernetworking-plugins and iptables installed?)"
}

// stableMAC gives interface ifname of the namespace at nsPath the MAC
// address docker derives from an IPv4 address (02:42 and the address's
// four bytes), before the VM takes the interface's address for its NIC.
// A container started again at the address it had (a fixed one) then
// keeps its MAC address, so that what its neighbours learned of it still
// holds; with a new MAC each start, they would send to the old one until
// their ARP entries went stale.
func stableMAC(nsPath, ifname, ip string) error {
	a := net.ParseIP(ip).To4()
	if a == nil {
		return nil // no IPv4 address: the plugin's MAC stays
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		return err
	}
	if err := h.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}); err != nil {
		return fmt.Errorf("%s: MAC address: %w", ifname, err)
	}
	return nil
}
