package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// TestLodgeNetworkBeyondHost: a container on a bridge network reaches an
// address beyond the host, forwarded even where the host's FORWARD policy
// is DROP (as Docker sets it) and masqueraded as the host's address on
// that side; a user network's rules go with `network rm`. "Beyond the
// host" is a network namespace of the test's own, linked to the host by a
// veth pair on a documentation network the host does not use (TEST-NET-2,
// -3 or -1: some hosts have an address on one).
func TestLodgeNetworkBeyondHost(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)

	ns, veth := fmt.Sprintf("ltest-out-%d", os.Getpid()), fmt.Sprintf("ltout%d", os.Getpid()%1000000)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", veth).Run() })
	prefix := unusedTestNet(t)
	hostAddr, outAddr := prefix+".1", prefix+".2"
	ip("addr", "add", hostAddr+"/24", "dev", veth)
	ip("link", "set", veth, "up")
	ip("-n", ns, "addr", "add", outAddr+"/24", "dev", "eth0")
	ip("-n", ns, "link", "set", "eth0", "up")

	// A server in the namespace answers with the address it sees.
	lst := listenInNetNS(t, ns, outAddr+":0")
	go http.Serve(lst, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	}))
	url := fmt.Sprintf("http://%s/", lst.Addr())

	// The host's FORWARD policy is DROP while the containers run.
	if out, err := exec.Command("iptables", "-S", "FORWARD").Output(); err == nil && strings.HasPrefix(string(out), "-P FORWARD ACCEPT") {
		if err := exec.Command("iptables", "-w", "-P", "FORWARD", "DROP").Run(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { exec.Command("iptables", "-w", "-P", "FORWARD", "ACCEPT").Run() })
	}

	if out := l.run("", "run", "--rm", ref, "wget", "-qO-", url); out.stdout != hostAddr+"\n" {
		t.Errorf("default network -> beyond the host: exit %d, %q %s; want the host's address there, %s", out.code, out.stdout, out.stderr, hostAddr)
	}
	l.run("", "network", "rm", "lodgeouttest")
	l.must("network", "create", "lodgeouttest")
	defer l.run("", "network", "rm", "lodgeouttest")
	if out := l.run("", "run", "--rm", "--network", "lodgeouttest", ref, "wget", "-qO-", url); out.stdout != hostAddr+"\n" {
		t.Errorf("user network -> beyond the host: exit %d, %q %s", out.code, out.stdout, out.stderr)
	}
	// Its rules are there while it is (so that their absence after rm
	// means they were removed).
	if out, _ := exec.Command("iptables-save").Output(); strings.Count(string(out), `"lodge network lodgeouttest"`) != 4 {
		t.Errorf("the user network's four rules are not installed:\n%s", out)
	}
	leases := "/var/lib/cni/networks/lodgeouttest"
	if _, err := os.Stat(leases); err != nil {
		t.Errorf("host-local keeps no leases of the user network: %v", err)
	}
	l.must("network", "rm", "lodgeouttest")
	if out, _ := exec.Command("iptables-save").Output(); strings.Contains(string(out), "lodge network lodgeouttest") {
		t.Errorf("the removed network's rules are left:\n%s", out)
	}
	if _, err := os.Stat(leases); !os.IsNotExist(err) {
		t.Errorf("the removed network's address leases are left (%s): %v", leases, err)
	}
}

// unusedTestNet is the first three octets of a documentation /24 no
// address of the host is in.
func unusedTestNet(t *testing.T) string {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
next:
	for _, p := range []string{"198.51.100", "203.0.113", "192.0.2"} {
		_, n, _ := net.ParseCIDR(p + ".0/24")
		for _, a := range addrs {
			if in, ok := a.(*net.IPNet); ok && n.Contains(in.IP) {
				continue next
			}
		}
		return p
	}
	t.Fatal("the host has addresses in every documentation network")
	return ""
}

// listenInNetNS listens on addr inside the named network namespace (the
// socket stays there; the calling thread comes back).
func listenInNetNS(t *testing.T, name, addr string) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	l, lerr := net.Listen("tcp", addr)
	if err := netns.Set(orig); err != nil {
		runtime.LockOSThread() // the thread stays in the namespace: let it end with the test
		t.Fatal(err)
	}
	if lerr != nil {
		t.Fatal(lerr)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
