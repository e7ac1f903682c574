package netsetup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// frame is an Ethernet frame a guest writes to its tap, ending with its
// marker (after the payload, or as an ARP frame's padding).
func frame(src net.HardwareAddr, ethType uint16, payload []byte, marker string) []byte {
	b := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, src...)
	b = binary.BigEndian.AppendUint16(b, ethType)
	b = append(b, payload...)
	return append(b, marker...)
}

func ipv4Header(src, dst net.IP) []byte {
	h := []byte{0x45, 0, 0, 20 + 8 + 16, 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	h = append(h, src.To4()...)
	h = append(h, dst.To4()...)
	return append(h, 0x30, 0x39, 0x30, 0x39, 0, 8+16, 0, 0) // UDP 12345 -> 12345
}

func ipv6Header(src net.IP) []byte {
	h := []byte{0x60, 0, 0, 0, 0, 16, unix.IPPROTO_UDP, 64}
	h = append(h, src.To16()...)
	return append(h, net.ParseIP("ff02::1").To16()...)
}

func arpPayload(sha net.HardwareAddr, spa, tpa net.IP) []byte {
	p := []byte{0, 1, 8, 0, 6, 4, 0, 2}
	p = append(p, sha...)
	p = append(p, spa.To4()...)
	p = append(p, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	return append(p, tpa.To4()...)
}

// TestGuardPassesOnlyTheVethsOwnAddresses writes, as a hostile guest
// would, frames into the tap's queue and reads what leaves the veth on
// the host's side: only the veth's own MAC and addresses get through.
func TestGuardPassesOnlyTheVethsOwnAddresses(t *testing.T) {
	path := testNetNS(t)
	peer := fmt.Sprintf("lodgeveth%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "link", "set", peer, "up").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out := inNS(t, path, "ip", "addr", "add", "fd00:5::7/64", "dev", "eth0", "nodad"); out != "" {
		t.Fatal(out)
	}
	a, err := Attach(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Detach()
	mac, _ := net.ParseMAC(a.Interfaces[0].MAC)
	forged, _ := net.ParseMAC("02:42:0a:7b:00:09")
	own, other, gw := net.ParseIP("10.123.0.5"), net.ParseIP("10.123.0.9"), net.ParseIP("10.123.0.1")

	pi, err := net.InterfaceByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: pi.Index}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 300000})

	type tc struct {
		marker string
		frame  []byte
		pass   bool
	}
	cases := []tc{
		{"ipv4-own", frame(mac, unix.ETH_P_IP, ipv4Header(own, gw), ""), true},
		{"ipv4-other-address", frame(mac, unix.ETH_P_IP, ipv4Header(other, gw), ""), false},
		{"ipv4-other-mac", frame(forged, unix.ETH_P_IP, ipv4Header(own, gw), ""), false},
		{"arp-own", frame(mac, unix.ETH_P_ARP, arpPayload(mac, own, gw), ""), true},
		{"arp-as-gateway", frame(mac, unix.ETH_P_ARP, arpPayload(mac, gw, other), ""), false},
		{"arp-as-neighbour", frame(mac, unix.ETH_P_ARP, arpPayload(mac, other, gw), ""), false},
		{"arp-other-sender-mac", frame(mac, unix.ETH_P_ARP, arpPayload(forged, own, gw), ""), false},
		{"arp-other-mac", frame(forged, unix.ETH_P_ARP, arpPayload(mac, own, gw), ""), false},
		{"ipv6-link-local", frame(mac, unix.ETH_P_IPV6, ipv6Header(net.ParseIP("fe80::42:aff:fe7b:5")), ""), true},
		{"ipv6-unspecified", frame(mac, unix.ETH_P_IPV6, ipv6Header(net.IPv6unspecified), ""), true},
		{"ipv6-own", frame(mac, unix.ETH_P_IPV6, ipv6Header(net.ParseIP("fd00:5::7")), ""), true},
		{"ipv6-other", frame(mac, unix.ETH_P_IPV6, ipv6Header(net.ParseIP("fd00:5::9")), ""), false},
		{"ipv6-link-local-other-mac", frame(forged, unix.ETH_P_IPV6, ipv6Header(net.ParseIP("fe80::1")), ""), false},
		{"lldp", frame(mac, 0x88cc, nil, ""), false},
	}
	for i := range cases {
		cases[i].frame = append(cases[i].frame, "lodge-guard-"+cases[i].marker+"."...)
		// virtio-net's header (10 bytes, no offloads) comes first: the
		// tap was made with IFF_VNET_HDR.
		if _, err := a.Links[0].File.Write(append(make([]byte, 10), cases[i].frame...)); err != nil {
			t.Fatalf("%s: write to the tap: %v", cases[i].marker, err)
		}
	}
	got := map[string]bool{}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			break // the timeout: nothing more came
		}
		if i := bytes.Index(buf[:n], []byte("lodge-guard-")); i >= 0 {
			m := buf[i+len("lodge-guard-") : n]
			got[string(m[:bytes.IndexByte(m, '.')])] = true
		}
	}
	for _, c := range cases {
		if got[c.marker] != c.pass {
			t.Errorf("%s: passed %v, want %v", c.marker, got[c.marker], c.pass)
		}
	}
	// Without an IPv6 address of its own, no IPv6 at all: link-local
	// would reach the host and the bridge's members past IPv4's rules.
	if r := guardRules(mac, []net.IP{own}); slices.ContainsFunc(r, func(g guardRule) bool { return g.proto == unix.ETH_P_IPV6 }) || len(r) != 2 {
		t.Errorf("an IPv4-only veth's guard: %d rules, IPv6 among them", len(r))
	}
	if !slices.ContainsFunc(cases, func(c tc) bool { return c.pass && got[c.marker] }) {
		t.Fatal("nothing passed: the test sees nothing (peer down?)")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
