package netsetup

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// tapOf names the tap whose queue f is and opens its network namespace.
func tapOf(f *os.File) (string, netns.NsHandle, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", 0, err
	}
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNGETIFF, ifr); err != nil {
		return "", 0, fmt.Errorf("TUNGETIFF: %w", err)
	}
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.TUNGETDEVNETNS)
	if err != nil {
		return "", 0, fmt.Errorf("TUNGETDEVNETNS: %w (Linux 5.2 or later)", err)
	}
	return ifr.Name(), netns.NsHandle(fd), nil
}

// SwapTap puts the tap whose queue is pooled (a pooled clone's NIC, in a
// namespace of its own: PlaceholderTap) where the tap whose queue is front
// is (a sandbox's, made by NewTap or Attach): into front's namespace,
// under front's name, with the redirect from front's veth (if it has one
// yet) pointing at it. front's tap is deleted. Records that name the tap
// (Teardown) stay true.
func SwapTap(front, pooled *os.File) error {
	name, fns, err := tapOf(front)
	if err != nil {
		return fmt.Errorf("the sandbox's tap: %w", err)
	}
	defer fns.Close()
	pname, pns, err := tapOf(pooled)
	if err != nil {
		return fmt.Errorf("the pooled tap: %w", err)
	}
	defer pns.Close()
	hf, err := netlink.NewHandleAt(fns)
	if err != nil {
		return err
	}
	defer hf.Close()
	hp, err := netlink.NewHandleAt(pns)
	if err != nil {
		return err
	}
	defer hp.Close()
	fl, err := hf.LinkByName(name)
	if err != nil {
		return fmt.Errorf("the sandbox's tap %s: %w", name, err)
	}
	veth, err := redirectedFrom(hf, fl.Attrs().Index)
	if err != nil {
		return err
	}
	pl, err := hp.LinkByName(pname)
	if err != nil {
		return fmt.Errorf("the pooled tap %s: %w", pname, err)
	}
	tmp := "lodgesw" + strconv.Itoa(os.Getpid()%100000000)
	if err := hp.LinkSetName(pl, tmp); err != nil {
		return fmt.Errorf("rename the pooled tap: %w", err)
	}
	if err := hp.LinkSetNsFd(pl, int(fns)); err != nil {
		hp.LinkSetName(pl, pname)
		return fmt.Errorf("move the pooled tap: %w", err)
	}
	// From here the sandbox's tap goes; a failure leaves the namespace
	// without a working NIC, which the caller must not fall back on.
	if veth != nil {
		q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: veth.Attrs().Index,
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
		if err := hf.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%w: remove the redirect on %s: %w", ErrSwapBroken, veth.Attrs().Name, err)
		}
	}
	if err := hf.LinkDel(fl); err != nil {
		return fmt.Errorf("%w: delete %s: %w", ErrSwapBroken, name, err)
	}
	nl, err := hf.LinkByName(tmp)
	if err == nil {
		err = hf.LinkSetName(nl, name)
	}
	if err != nil {
		return fmt.Errorf("%w: rename the pooled tap to %s: %w", ErrSwapBroken, name, err)
	}
	if veth != nil {
		if err := redirect(hf, veth.Attrs().Name, name, fl.Attrs().MTU); err != nil {
			return fmt.Errorf("%w: redirect %s <-> %s: %w", ErrSwapBroken, veth.Attrs().Name, name, err)
		}
	}
	return nil
}

// ErrSwapBroken reports a SwapTap that failed after the sandbox's tap was
// gone.
var ErrSwapBroken = errors.New("the sandbox's network is broken")

// redirectedFrom finds the link whose ingress redirects to the link index
// tap (Attach's veth), or nil.
func redirectedFrom(h *netlink.Handle, tap int) (netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Attrs().Index == tap {
			continue
		}
		fs, err := h.FilterList(l, netlink.MakeHandle(0xffff, 0))
		if err != nil {
			continue // no ingress qdisc
		}
		for _, f := range fs {
			u, ok := f.(*netlink.U32)
			if !ok {
				continue
			}
			for _, a := range u.Actions {
				if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == tap {
					return l, nil
				}
			}
		}
	}
	return nil, nil
}
