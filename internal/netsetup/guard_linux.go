package netsetup

import (
	"encoding/binary"
	"fmt"
	"net"
	"runtime"
	"slices"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// What a guest sends leaves its tap only as the interface CNI made: with
// the veth's MAC as its Ethernet source and, for ARP and IP, one of the
// veth's addresses as its sender. A hostile guest (its kernel is the
// tenant's) could otherwise forge another container's address, or answer
// ARP for the gateway or a neighbour and take their traffic on a shared
// bridge, and a rule of the host that names a container by its address
// would name nothing. Each allowed kind of frame is a u32 filter on the
// tap's ingress that redirects it to the veth; the last filter drops the
// rest. The veth's side (what reaches the guest) is not filtered.
//
// The drop is a two-instruction eBPF program (cls_bpf, direct action),
// not tc's gact: hosts built with u32, bpf and mirred alone (this
// development host's kernel) have no gact, and cls_bpf is in every
// kernel that runs Cilium or Kata's tc-filter mode.

// guardDropPrio is the priority of the filter that drops what no earlier
// filter passed.
const guardDropPrio = 100

// guardRules are the u32 selectors of the frames a guest behind a veth
// with mac and addrs may send: per protocol, the selectors that pass.
type guardRule struct {
	proto uint16
	sel   *netlink.TcU32Sel
}

// u32 keys read 4 bytes at an offset from the network header (negative:
// the Ethernet header, whose source MAC starts 8 bytes before it).
func key(off int32, val, mask uint32) netlink.TcU32Key {
	return netlink.TcU32Key{Off: off, Val: val & mask, Mask: mask}
}

// macKeys match the Ethernet source address.
func macKeys(mac net.HardwareAddr) []netlink.TcU32Key {
	return []netlink.TcU32Key{
		key(-8, binary.BigEndian.Uint32(mac[0:4]), 0xffffffff),
		key(-4, uint32(mac[4])<<24|uint32(mac[5])<<16, 0xffff0000),
	}
}

// ipv6Keys match a 16-byte address at off, its first prefix bits.
func ipv6Keys(off int32, ip net.IP, prefix int) []netlink.TcU32Key {
	var ks []netlink.TcU32Key
	for i := 0; i < 4 && prefix > 0; i++ {
		bits := min(prefix, 32)
		mask := uint32(0xffffffff) << (32 - bits)
		ks = append(ks, key(off+int32(4*i), binary.BigEndian.Uint32(ip[4*i:4*i+4]), mask))
		prefix -= bits
	}
	if len(ks) == 0 { // ::/0 would match anything: the caller never asks it
		ks = append(ks, key(off, 0, 0))
	}
	return ks
}

func selector(keys ...[]netlink.TcU32Key) *netlink.TcU32Sel {
	return &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: slices.Clip(slices.Concat(keys...))}
}

// guardRules lists what passes for mac and addrs (the veth's, link-local
// ones included or not): ARP whose sender is mac and an IPv4 address of
// addrs; IPv4 from such an address; and where addrs hold a global IPv6
// address, IPv6 from one, from a link-local one (the guest makes its
// own) or the unspecified one (duplicate address detection). Everything
// sent has mac as its source.
func guardRules(mac net.HardwareAddr, addrs []net.IP) []guardRule {
	m := macKeys(mac)
	var rules []guardRule
	for _, ip := range addrs {
		if v4 := ip.To4(); v4 != nil {
			a := binary.BigEndian.Uint32(v4)
			// ARP for IPv4 over Ethernet: sender MAC at 8, sender IP at 14.
			arp := []netlink.TcU32Key{
				key(8, binary.BigEndian.Uint32(mac[0:4]), 0xffffffff),
				key(12, uint32(mac[4])<<24|uint32(mac[5])<<16|a>>16, 0xffffffff),
				key(16, a<<16, 0xffff0000),
			}
			rules = append(rules,
				guardRule{unix.ETH_P_ARP, selector(m, arp)},
				guardRule{unix.ETH_P_IP, selector(m, []netlink.TcU32Key{key(12, a, 0xffffffff)})})
		}
	}
	// IPv6 only where the network gave the veth an IPv6 address: else
	// a guest's link-local IPv6 would reach the host and its bridge's
	// other members past every IPv4 rule (egress rules, a network
	// without traffic between its containers).
	var v6 []guardRule
	for _, ip := range addrs {
		if ip.To4() == nil && !ip.IsLinkLocalUnicast() {
			v6 = append(v6, guardRule{unix.ETH_P_IPV6, selector(m, ipv6Keys(8, ip, 128))})
		}
	}
	if len(v6) > 0 {
		rules = append(rules,
			guardRule{unix.ETH_P_IPV6, selector(m, ipv6Keys(8, net.ParseIP("fe80::"), 10))},
			guardRule{unix.ETH_P_IPV6, selector(m, ipv6Keys(8, net.IPv6unspecified, 128))})
		rules = append(rules, v6...)
	}
	return rules
}

// guard installs on tap's ingress (its qdisc made) the filters that pass
// what veth's guest may send to veth, and drop the rest.
func guard(h *netlink.Handle, veth, tap netlink.Link) error {
	mac := veth.Attrs().HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("%s has no Ethernet address", veth.Attrs().Name)
	}
	as, err := h.AddrList(veth, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", veth.Attrs().Name, err)
	}
	var addrs []net.IP
	for _, a := range as {
		addrs = append(addrs, a.IP)
	}
	ti := tap.Attrs().Index
	for i, r := range guardRules(mac, addrs) {
		f := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: ti, Parent: netlink.MakeHandle(0xffff, 0),
				Protocol: r.proto, Priority: uint16(1 + i)},
			Sel:     r.sel,
			Actions: []netlink.Action{netlink.NewMirredAction(veth.Attrs().Index)},
		}
		if f.Priority >= guardDropPrio {
			return fmt.Errorf("%s has too many addresses (%d)", veth.Attrs().Name, len(addrs))
		}
		if err := h.FilterAdd(f); err != nil {
			return fmt.Errorf("guard filter on %s: %w", tap.Attrs().Name, err)
		}
	}
	prog, err := dropProgram()
	if err != nil {
		return fmt.Errorf("guard filter on %s: %w", tap.Attrs().Name, err)
	}
	defer unix.Close(prog) // the filter holds the program
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ti, Parent: netlink.MakeHandle(0xffff, 0),
			Protocol: unix.ETH_P_ALL, Priority: guardDropPrio},
		Fd: prog, Name: "lodge-guard-drop", DirectAction: true,
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("guard filter on %s: %w", tap.Attrs().Name, err)
	}
	return nil
}

// dropProgram loads a classifier program that drops every frame
// (TC_ACT_SHOT) and returns its descriptor.
func dropProgram() (int, error) {
	insns := []uint64{
		0x00000002_0000_00b7, // mov64 r0, 2 (TC_ACT_SHOT): imm 2, code BPF_ALU64|BPF_MOV|BPF_K
		0x00000000_0000_0095, // exit: code BPF_JMP|BPF_EXIT
	}
	license := []byte("Apache-2.0\x00")
	attr := struct {
		progType, insnCnt  uint32
		insns, license     uint64
		logLevel, logSize  uint32
		logBuf             uint64
		kernVersion, flags uint32
		name               [16]byte
	}{progType: unix.BPF_PROG_TYPE_SCHED_CLS, insnCnt: uint32(len(insns)),
		insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0])))}
	copy(attr.name[:], "lodge_guard")
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, fmt.Errorf("load the drop program (bpf): %w", errno)
	}
	return int(fd), nil
}
