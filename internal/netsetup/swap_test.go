package netsetup

import (
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// A pooled clone's tap takes the place of the tap Attach made: same name,
// the veth's redirect pointing at it both ways, the old tap gone; the
// pooled tap's own namespace no longer holds it.
func TestSwapTap(t *testing.T) {
	path := testNetNS(t)
	a, err := Attach(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Detach()
	pooled, err := PlaceholderTap()
	if err != nil {
		t.Fatal(err)
	}
	defer pooled.Close()
	_, pns, err := tapOf(pooled)
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	before := ifindex(t, path, "lodgetap0")

	if err := SwapTap(a.Links[0].File, pooled); err != nil {
		t.Fatal(err)
	}
	after := ifindex(t, path, "lodgetap0")
	if after == before {
		t.Fatalf("lodgetap0 is still the sandbox's tap (index %d)", after)
	}
	name, ns, err := tapOf(pooled)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	want, _ := netns.GetFromPath(path)
	defer want.Close()
	if name != "lodgetap0" || !ns.Equal(want) {
		t.Errorf("the pooled queue's tap is %q in %v, want lodgetap0 in the pod's namespace", name, ns)
	}
	// eth0's frames all go to the tap; the tap's go to eth0 through the
	// guard (ARP and IPv4 from its address; no IPv6, which the network
	// does not give), and the rest is dropped: made once.
	for dev, want := range map[string]struct {
		to    string
		n     int
		guard bool
	}{"eth0": {"lodgetap0", 1, false}, "lodgetap0": {"eth0", 2, true}} {
		out := inNS(t, path, "tc", "filter", "show", "dev", dev, "ingress")
		n := len(regexp.MustCompile("Redirect to device").FindAllString(out, -1))
		if n != want.n || n != len(regexp.MustCompile("Redirect to device "+want.to).FindAllString(out, -1)) ||
			strings.Count(out, "lodge-guard-drop") != map[bool]int{true: 1}[want.guard] {
			t.Errorf("%s: want %d redirects to %s (guarded: %v):\n%s", dev, want.n, want.to, want.guard, out)
		}
	}
	if out := inNS(t, path, "ip", "link", "show", "lodgetap0"); !strings.Contains(out, "mtu 1400") || !strings.Contains(out, "UP") {
		t.Errorf("tap: %s", out)
	}
	h, _ := netlink.NewHandleAt(pns)
	defer h.Close()
	if links, _ := h.LinkList(); len(links) != 1 { // lo
		t.Errorf("the pooled tap's namespace still holds %d links", len(links))
	}
	// Detach's record (the names) still describes what is there.
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	if out := inNS(t, path, "ip", "link", "show", "lodgetap0"); !strings.Contains(out, "does not exist") {
		t.Errorf("tap left after Detach: %s", out)
	}
}

func ifindex(t *testing.T, path, name string) int {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}
