// Package netsetup plugs a pod's network namespace into its VM the way
// Kata's tc-filter mode does: for each interface CNI made (a veth, usually)
// a tap device in the same namespace, and tc rules that redirect every
// frame arriving on one to the other (ingress qdisc, u32 match-all, mirred
// egress redirect, both ways; from the guest only what its veth's
// addresses may send: guard_linux.go). QEMU's virtio-net uses the tap with the
// veth's MAC, and the guest takes over the veth's addresses and routes, so
// the pod is on the network exactly where CNI put it.
package netsetup

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TapPrefix names the taps made here.
const TapPrefix = "lodgetap"

// Interface is one pod interface as the guest must configure it.
type Interface struct {
	Name  string   // the veth's name, e.g. eth0
	MAC   string   // the veth's MAC, which the guest NIC takes
	MTU   int      // the veth's MTU
	Addrs []string // CIDR, e.g. 10.88.0.5/16
}

// Route is one route of the pod's namespace.
type Route struct {
	Dest    string // CIDR; empty for the default route
	Gateway string // empty for a link route
	Device  string // interface name
}

// Link is one veth/tap pair.
type Link struct {
	Veth string
	Tap  string
	// File is the tap's queue, for the VMM; the tap lives while it is open.
	File *os.File
}

// Attachment is a pod namespace wired for its VM.
type Attachment struct {
	NetNS      string
	Links      []Link
	Interfaces []Interface
	Routes     []Route
}

// Attach wires every non-loopback interface of the namespace at path. On
// error nothing it made is left.
func Attach(path string) (_ *Attachment, retErr error) {
	ns, h, links, err := openNS(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	defer h.Close()
	a := &Attachment{NetNS: path}
	defer func() {
		if retErr != nil {
			a.Detach()
		}
	}()
	for _, l := range wirable(links) {
		attrs := l.Attrs()
		iface, routes, err := describe(h, l)
		if err != nil {
			return nil, err
		}
		a.Routes = append(a.Routes, routes...)
		tap := fmt.Sprintf("%s%d", TapPrefix, len(a.Links))
		f, err := openTap(ns, tap)
		if err != nil {
			return nil, fmt.Errorf("create %s in %s: %w", tap, path, err)
		}
		a.Links = append(a.Links, Link{Veth: attrs.Name, Tap: tap, File: f})
		if err := redirect(h, attrs.Name, tap, attrs.MTU); err != nil {
			return nil, fmt.Errorf("redirect %s <-> %s: %w", attrs.Name, tap, err)
		}
		a.Interfaces = append(a.Interfaces, iface)
	}
	return a, nil
}

// openNS opens the network namespace at path, a netlink handle in it and
// its links; the caller closes the first two.
func openNS(path string) (netns.NsHandle, *netlink.Handle, []netlink.Link, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ns, nil, nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return ns, nil, nil, fmt.Errorf("netlink in %s: %w", path, err)
	}
	links, err := h.LinkList()
	if err != nil {
		h.Close()
		ns.Close()
		return ns, nil, nil, fmt.Errorf("list interfaces in %s: %w", path, err)
	}
	return ns, h, links, nil
}

// wirable are the links a VM takes over: not loopback, not a tap, with an
// Ethernet address (a veth, usually).
func wirable(links []netlink.Link) []netlink.Link {
	var out []netlink.Link
	for _, l := range links {
		attrs := l.Attrs()
		if attrs.Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" || len(attrs.HardwareAddr) != 6 {
			continue
		}
		out = append(out, l)
	}
	return out
}

// describe reads what the guest must configure for l: its name, MAC, MTU,
// addresses, and the routes through it.
func describe(h *netlink.Handle, l netlink.Link) (Interface, []Route, error) {
	attrs := l.Attrs()
	iface := Interface{Name: attrs.Name, MAC: attrs.HardwareAddr.String(), MTU: attrs.MTU}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return iface, nil, fmt.Errorf("addresses of %s: %w", attrs.Name, err)
	}
	for _, ad := range addrs {
		if ad.IP.IsLinkLocalUnicast() {
			continue // the guest makes its own
		}
		iface.Addrs = append(iface.Addrs, ad.IPNet.String())
	}
	rs, err := h.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return iface, nil, fmt.Errorf("routes of %s: %w", attrs.Name, err)
	}
	var routes []Route
	for _, r := range rs {
		if r.Protocol == unix.RTPROT_KERNEL || (r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast()) {
			continue // made with the address
		}
		rt := Route{Device: attrs.Name}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones > 0 || !r.Dst.IP.IsUnspecified() {
				rt.Dest = r.Dst.String() // else the default route: Dest stays ""
			}
		}
		if r.Gw != nil {
			rt.Gateway = r.Gw.String()
		}
		routes = append(routes, rt)
	}
	return iface, routes, nil
}

// NewTap makes the tap name in the namespace at path, before the
// interface it will carry exists (see AttachTap), and returns its queue.
func NewTap(path, name string) (*os.File, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	f, err := openTap(ns, name)
	if err != nil {
		return nil, fmt.Errorf("create %s in %s: %w", name, path, err)
	}
	return f, nil
}

// AttachTap wires the one interface that has appeared in the namespace at
// path since NewTap made tap there (an engine's hook put it there: Docker)
// to that tap. A namespace with no such interface gives an Attachment
// without interfaces; more than one is an error (the VM has one NIC for
// them). On error nothing it made is left.
func AttachTap(path, tap string) (_ *Attachment, retErr error) {
	ns, h, links, err := openNS(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	defer h.Close()
	a := &Attachment{NetNS: path}
	ls := wirable(links)
	switch {
	case len(ls) == 0:
		return a, nil
	case len(ls) > 1:
		var names []string
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return nil, fmt.Errorf("the network namespace has %d interfaces (%v) and the VM one NIC for them", len(ls), names)
	}
	iface, routes, err := describe(h, ls[0])
	if err != nil {
		return nil, err
	}
	veth := ls[0].Attrs().Name
	a.Links = []Link{{Veth: veth, Tap: tap}}
	defer func() {
		if retErr != nil {
			Teardown(path, []string{veth}, nil) // the tap is the VM's
		}
	}()
	if err := redirect(h, veth, tap, iface.MTU); err != nil {
		return nil, fmt.Errorf("redirect %s <-> %s: %w", veth, tap, err)
	}
	a.Interfaces, a.Routes = []Interface{iface}, routes
	return a, nil
}

// openTap makes a tap device in ns and returns its queue. The tap is not
// persistent: it goes away when the last holder of the queue closes it.
func openTap(ns netns.NsHandle, name string) (*os.File, error) {
	var f *os.File
	err := inNetNS(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	return f, err
}

// PlaceholderTap returns the queue of a tap in a network namespace of its
// own that nothing else joins: a backend for a NIC slot that must exist
// (a template's, or an unused one in a clone) but reach nothing. The tap
// and its namespace go away when the last holder of the queue closes it.
func PlaceholderTap() (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, and with it
		// the thread's reference to the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			res <- result{err: fmt.Errorf("placeholder tap: new network namespace: %w", err)}
			return
		}
		ns, err := netns.Get()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer ns.Close()
		f, err := openTap(ns, "lodgeslot0")
		res <- result{f, err}
	}()
	r := <-res
	return r.f, r.err
}

// inNetNS runs fn on a thread switched to ns. The thread is thrown away
// if it cannot be switched back.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// redirect brings the tap up with the veth's MTU and sends every frame
// that arrives on the veth out of the tap, and what arrives on the tap
// out of the veth if the veth's own addresses sent it (guard).
func redirect(h *netlink.Handle, veth, tap string, mtu int) error {
	v, err := h.LinkByName(veth)
	if err != nil {
		return err
	}
	t, err := h.LinkByName(tap)
	if err != nil {
		return err
	}
	if err := h.LinkSetMTU(t, mtu); err != nil {
		return err
	}
	if err := h.LinkSetUp(t); err != nil {
		return err
	}
	for _, p := range [][2]netlink.Link{{v, t}, {t, v}} {
		from, to := p[0].Attrs().Index, p[1].Attrs().Index
		q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from,
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
		if err := h.QdiscAdd(q); err != nil {
			return fmt.Errorf("ingress qdisc on %s: %w", p[0].Attrs().Name, err)
		}
		if p[0] == t {
			if err := guard(h, v, t); err != nil {
				return err
			}
			continue
		}
		f := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: from, Parent: netlink.MakeHandle(0xffff, 0),
				Protocol: unix.ETH_P_ALL, Priority: 1},
			Actions: []netlink.Action{netlink.NewMirredAction(to)},
		}
		if err := h.FilterAdd(f); err != nil {
			return fmt.Errorf("mirred filter on %s: %w", p[0].Attrs().Name, err)
		}
	}
	return nil
}

// CloseFiles closes this process's copies of the tap queues (once the VMM
// holds them).
func (a *Attachment) CloseFiles() {
	for i := range a.Links {
		if a.Links[i].File != nil {
			a.Links[i].File.Close()
			a.Links[i].File = nil
		}
	}
}

// Detach removes the taps and the redirects.
func (a *Attachment) Detach() error {
	a.CloseFiles()
	var veths, taps []string
	for _, l := range a.Links {
		veths, taps = append(veths, l.Veth), append(taps, l.Tap)
	}
	return Teardown(a.NetNS, veths, taps)
}

// Teardown removes taps and the redirects on veths in the namespace at
// path (after a crash, from a record). A namespace that is gone took them
// with it.
func Teardown(path string, veths, taps []string) error {
	ns, err := netns.GetFromPath(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pod network namespace %s: %w", path, err)
	}
	defer ns.Close()
	// The engine's CNI teardown, racing a cleanup after a crash, may have
	// unmounted the namespace already, leaving its mount point a plain
	// file: the namespace went with its interfaces.
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(ns), &fs); err == nil && fs.Type != unix.NSFS_MAGIC {
		return nil
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for _, name := range taps {
		if l, err := h.LinkByName(name); err == nil {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
			}
		}
	}
	for _, name := range veths {
		l, err := h.LinkByName(name)
		if err != nil {
			continue
		}
		q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index,
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
		// ENODEV: the veth went meanwhile (the engine's CNI teardown
		// races a cleanup after a crash), and its redirect with it.
		if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("remove redirect on %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
