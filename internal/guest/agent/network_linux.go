package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/guest/boot"
)

// network configures the guest's interfaces as the pod's.
type network struct {
	log *slog.Logger
}

// nicWait bounds the wait for a NIC the host plugged in to appear (the
// virtio_net driver probes it once loaded).
const nicWait = 10 * time.Second

// nicDriver drives the NICs the host plugs in; it is loaded on demand, so
// that VMs without a network do not pay for it at boot.
const nicDriver = "virtio_net"

// Configure renames each NIC (found by MAC) to the pod interface's name,
// sets its MTU and addresses, brings it and loopback up, and adds the
// routes. Every field is checked: the request is the host's, but a wrong
// one must fail with a clear message, not half-configure the guest.
func (n network) Configure(ctx context.Context, r *agentv1.NetworkRequest) (*agentv1.Empty, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("loopback up: %w", err)
		}
	}
	if len(r.Interfaces) > 0 {
		if err := boot.LoadModule(nicDriver); err != nil {
			return nil, fmt.Errorf("load the NIC driver: %w", err)
		}
	}
	for _, in := range r.Interfaces {
		if err := configureNIC(ctx, in); err != nil {
			return nil, fmt.Errorf("interface %s (%s): %w", in.Name, in.Mac, err)
		}
	}
	for _, rt := range r.Routes {
		if err := addRoute(rt); err != nil {
			return nil, fmt.Errorf("route %q via %q dev %s: %w", rt.Destination, rt.Gateway, rt.Device, err)
		}
	}
	for k, v := range r.Sysctls {
		if err := setNetSysctl(k, v); err != nil {
			return nil, err
		}
	}
	n.log.Info("network configured", "interfaces", len(r.Interfaces), "routes", len(r.Routes))
	return &agentv1.Empty{}, nil
}

func configureNIC(ctx context.Context, in *agentv1.NetworkInterface) error {
	mac, err := net.ParseMAC(in.Mac)
	if err != nil {
		return err
	}
	if in.Name == "" || len(in.Name) >= unix.IFNAMSIZ || strings.ContainsAny(in.Name, "/ \t\n:") {
		return fmt.Errorf("bad interface name %q", in.Name)
	}
	if in.Mtu != 0 && (in.Mtu < 68 || in.Mtu > 65535) {
		return fmt.Errorf("bad MTU %d", in.Mtu)
	}
	find := mac
	if in.CurrentMac != "" {
		if find, err = net.ParseMAC(in.CurrentMac); err != nil {
			return err
		}
	}
	link, err := linkByMAC(ctx, find)
	if err != nil {
		return err
	}
	if find.String() != mac.String() {
		if err := netlink.LinkSetDown(link); err != nil {
			return err
		}
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set MAC %s: %w", mac, err)
		}
	}
	if link.Attrs().Name != in.Name {
		if err := netlink.LinkSetDown(link); err != nil {
			return err
		}
		if err := netlink.LinkSetName(link, in.Name); err != nil {
			return fmt.Errorf("rename %s: %w", link.Attrs().Name, err)
		}
	}
	if in.Mtu != 0 {
		if err := netlink.LinkSetMTU(link, int(in.Mtu)); err != nil {
			return fmt.Errorf("set MTU: %w", err)
		}
	}
	for _, a := range in.Addresses {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s: %w", a, err)
		}
	}
	return netlink.LinkSetUp(link)
}

// linkByMAC finds the NIC with this MAC, waiting for its driver.
func linkByMAC(ctx context.Context, mac net.HardwareAddr) (netlink.Link, error) {
	deadline := time.Now().Add(nicWait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() && l.Type() == "device" {
				return l, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("no NIC with MAC %s in the guest (is virtio_net loaded?)", mac)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func addRoute(rt *agentv1.NetworkRoute) error {
	link, err := netlink.LinkByName(rt.Device)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index}
	if rt.Destination != "" {
		_, dst, err := net.ParseCIDR(rt.Destination)
		if err != nil {
			return err
		}
		r.Dst = dst
	}
	if rt.Gateway != "" {
		if r.Gw = net.ParseIP(rt.Gateway); r.Gw == nil {
			return fmt.Errorf("bad gateway %q", rt.Gateway)
		}
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := netlink.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// setNetSysctl writes one net.* sysctl of the guest's network namespace.
func setNetSysctl(key, value string) error {
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "..") || strings.ContainsAny(key, "/ ") {
		return fmt.Errorf("sysctl %q: only net.* keys are set here", key)
	}
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
