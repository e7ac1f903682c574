package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
// -3 or -1: some hosts have an address on one). An internal network
// reaches nothing there.
func TestLodgeNetworkBeyondHost(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)

	hostAddr, outAddr, url := beyondHost(t)

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
	// A guest that sends from an address it was not given gets nothing
	// through (netsetup's guard); from its own, all goes on. Nor does its
	// IPv6 (link-local) leave it: the network gives it no IPv6 address.
	spoof := `set -- $(ip -4 route show default); gw=$3
own=$(ip -4 addr show eth0 | awk '/inet /{print $2}' | cut -d/ -f1)
ip addr add ${own%.*}.250/32 dev eth0
ip route replace default via $gw dev eth0 src ${own%.*}.250
ping -c 1 -W 3 ` + outAddr + ` >/dev/null && echo FORGED-PASSED
ip route replace default via $gw dev eth0 src $own
ip neigh flush dev eth0 >/dev/null
wget -qO- ` + url + `
ping -6 -c 2 -W 3 -I eth0 ff02::1 2>/dev/null | grep 'bytes from' | grep -vc "$(ip -6 addr show eth0 | awk '/inet6/{print $2}' | cut -d/ -f1)"`
	if out := l.run("", "run", "--rm", "--cap-add", "NET_ADMIN", ref, "sh", "-c", spoof); out.stdout != hostAddr+"\n0\n" {
		t.Errorf("a forged source address: %q %s; want only the own address's answer, %s, then no IPv6 answer but its own (its network gives no IPv6)", out.stdout, out.stderr, hostAddr)
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

	// An internal network: its containers reach each other by name and
	// nothing beyond the host, not even a privileged one that routes
	// through the gateway itself; it publishes no port.
	l.run("", "network", "rm", "lodgeintest")
	l.must("network", "create", "--internal", "lodgeintest")
	defer l.run("", "network", "rm", "lodgeintest")
	if got := l.must("network", "inspect", "-f", "{{.Internal}}", "lodgeintest"); got != "true\n" {
		t.Fatalf("inspect of an internal network: Internal %q", got)
	}
	gw := strings.TrimSpace(l.must("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", "lodgeintest"))
	l.must("run", "-d", "--name", "inner", "--network", "lodgeintest", ref, "sh", "-c", "mkdir /www; echo inside > /www/index.html; exec httpd -f -p 80 -h /www")
	defer l.run("", "rm", "-f", "inner")
	if out := l.run("", "run", "--rm", "--network", "lodgeintest", ref, "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://inner/ && exit; sleep 1; done"); out.stdout != "inside\n" {
		t.Errorf("internal network -> its own member: exit %d, %q %s", out.code, out.stdout, out.stderr)
	}
	if out := l.run("", "run", "--rm", "--network", "lodgeintest", "--privileged", ref, "sh", "-c",
		"ip route; ip route add default via "+gw+" && echo routed && wget -T 5 -qO- "+url); out.code == 0 || !strings.Contains(out.stdout, "routed") ||
		strings.Contains(out.stdout, hostAddr) || strings.Contains(out.stdout, "default") {
		t.Errorf("internal network -> beyond the host: exit %d, %q %s; want no default route, and none through the gateway", out.code, out.stdout, out.stderr)
	}
	if out := l.run("", "run", "--rm", "--network", "lodgeintest", "-p", "18080:80", ref, "true"); out.code == 0 || !strings.Contains(out.stderr, "internal") {
		t.Errorf("-p on an internal network: exit %d: %s", out.code, out.stderr)
	}
	l.must("rm", "-f", "inner")
	l.must("network", "rm", "lodgeintest")
	if out, _ := exec.Command("iptables-save").Output(); strings.Contains(string(out), "lodge network lodgeintest") {
		t.Errorf("the internal network's rules are left:\n%s", out)
	}
}

// beyondHost makes "beyond the host" for a test: a network namespace of
// its own, linked to the host by a veth pair on a documentation network
// the host does not use, where an HTTP server on port 80 answers with the
// address it sees. It returns the host's address on that link, the namespace's,
// and the server's URL.
func beyondHost(t *testing.T) (hostAddr, outAddr, url string) {
	t.Helper()
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
	hostAddr, outAddr = prefix+".1", prefix+".2"
	ip("addr", "add", hostAddr+"/24", "dev", veth)
	ip("link", "set", veth, "up")
	ip("-n", ns, "addr", "add", outAddr+"/24", "dev", "eth0")
	ip("-n", ns, "link", "set", "eth0", "up")

	// A server in the namespace answers with the address it sees.
	lst := listenInNetNS(t, ns, outAddr+":80")
	go http.Serve(lst, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintln(w, host)
	}))
	url = fmt.Sprintf("http://%s/", lst.Addr())
	return hostAddr, outAddr, url
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

// TestLodgeTwoNetworks: a container on two networks (--network twice)
// reaches and is reached by the members of each by name, at its address
// on that network, with its default route on the first; the others do
// not see across; addresses it asks for (--ip, name=NET,ip=) it gets,
// and keeps through a restart, and no other container gets them; a
// restart keeps both networks; network connect and disconnect of a
// stopped container; nothing is left once it is gone.
func TestLodgeTwoNetworks(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	linksBefore := hostLinks(t)
	l.must("network", "create", "twofront")
	l.must("network", "create", "twoback")
	t.Cleanup(func() {
		l.run("", "rm", "-f", "two-web", "two-api", "two-store")
		l.run("", "network", "rm", "twofront", "twoback")
	})
	l.must("run", "-d", "--name", "two-store", "--network", "twoback", ref, "sleep", "1000")
	// api asks for its addresses (--ip, and docker's name=,ip=), .77 of
	// each network's subnet.
	fixed := func(n string) string {
		gw := strings.TrimSpace(l.must("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", n))
		return strings.TrimSuffix(gw, ".1") + ".77"
	}
	fixedFront, fixedBack := fixed("twofront"), fixed("twoback")
	l.must("run", "-d", "--name", "two-api", "--network", "twofront", "--ip", fixedFront, "--network", "name=twoback,ip="+fixedBack,
		"--network-alias", "apisvc", ref, "sleep", "1000")
	l.must("run", "-d", "--name", "two-web", "--network", "twofront", ref, "sleep", "1000")
	var insp []struct {
		NetworkSettings struct {
			Networks map[string]struct{ IPAddress string }
		}
	}
	if err := json.Unmarshal([]byte(l.must("inspect", "two-api")), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect two-api: %v", err)
	}
	front, back := insp[0].NetworkSettings.Networks["twofront"].IPAddress, insp[0].NetworkSettings.Networks["twoback"].IPAddress
	if front != fixedFront || back != fixedBack {
		t.Fatalf("two-api's addresses: front %q, back %q; want the ones it asked for, %s and %s", front, back, fixedFront, fixedBack)
	}
	// Its MAC address is docker's, from its address: the same at each
	// start, so that its neighbours' ARP entries still hold after one.
	a := net.ParseIP(fixedFront).To4()
	want := net.HardwareAddr{2, 0x42, a[0], a[1], a[2], a[3]}.String() + "\n"
	if mac := l.must("exec", "two-api", "cat", "/sys/class/net/eth0/address"); mac != want {
		t.Errorf("two-api's eth0 MAC address %q, want 02:42 and its address", mac)
	}
	if r := l.run("", "run", "--rm", "--network", "twofront", "--ip", fixedFront, ref, "true"); r.code == 0 || !strings.Contains(r.stderr, fixedFront) {
		t.Errorf("a second container at %s: exit %d %s", fixedFront, r.code, r.stderr)
	}
	reach := func(from, to string) bool {
		return l.run("", "exec", from, "ping", "-c1", "-W5", to).code == 0
	}
	check := func(when string) {
		t.Helper()
		for _, c := range []struct{ from, to string }{{"two-web", "two-api"}, {"two-web", "apisvc"}, {"two-store", "two-api"}, {"two-api", "two-web"}, {"two-api", "two-store"}} {
			if !reach(c.from, c.to) {
				t.Errorf("%s: %s does not reach %s", when, c.from, c.to)
			}
		}
		if hosts := l.must("exec", "two-web", "cat", "/etc/hosts"); strings.Contains(hosts, "two-store") {
			t.Errorf("%s: web, on front alone, is told of store:\n%s", when, hosts)
		}
		api := l.must("exec", "two-api", "sh", "-c", "cat /etc/hosts; ip route")
		if strings.Count(api, "default via") != 1 || !strings.Contains(api, "# other containers on network twofront") || !strings.Contains(api, "# other containers on network twoback") {
			t.Errorf("%s: api's names and routes:\n%s", when, api)
		}
	}
	check("started")
	if hosts := l.must("exec", "two-store", "cat", "/etc/hosts"); !strings.Contains(hosts, back+"\ttwo-api apisvc") {
		t.Errorf("store does not find api at its address on back (%s):\n%s", back, hosts)
	}
	if r := l.run("", "network", "rm", "twoback"); r.code == 0 || !strings.Contains(r.stderr, "two-api") {
		t.Errorf("rm of a network a container is on as its second: exit %d %s", r.code, r.stderr)
	}
	l.must("restart", "-t", "0", "two-api")
	check("after a restart")
	if got := l.must("inspect", "-f", `{{range $k, $v := .NetworkSettings.Networks}}{{$v.IPAddress}}={{$v.IPAMConfig.IPv4Address}} {{end}}`, "two-api"); got != fixedBack+"="+fixedBack+" "+fixedFront+"="+fixedFront+" \n" { // by name
		t.Errorf("two-api's addresses after a restart: %q", got)
	}
	// network connect and disconnect: refused while it runs (no NIC
	// hotplug); a stopped container joins or leaves at its next start.
	if r := l.run("", "network", "connect", "twoback", "two-web"); r.code == 0 || !strings.Contains(r.stderr, "running") {
		t.Errorf("connect of a running container: exit %d %s", r.code, r.stderr)
	}
	l.must("stop", "-t", "0", "two-web")
	l.must("network", "connect", "twoback", "two-web")
	l.must("start", "two-web")
	if !reach("two-web", "two-store") {
		t.Error("two-web, connected to back, does not reach store")
	}
	l.must("stop", "-t", "0", "two-web")
	l.must("network", "disconnect", "twoback", "two-web")
	if r := l.run("", "network", "disconnect", "twofront", "two-web"); r.code == 0 || !strings.Contains(r.stderr, "only one") {
		t.Errorf("disconnect from its only network: exit %d %s", r.code, r.stderr)
	}
	l.must("start", "two-web")
	if reach("two-web", "two-store") {
		t.Error("two-web, disconnected from back, still reaches store")
	}
	if r := l.run("", "run", "--rm", "--network", "none", "--network", "twofront", ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "none") {
		t.Errorf("--network none with another: exit %d %s", r.code, r.stderr)
	}
	l.must("rm", "-f", "two-web", "two-api", "two-store")
	for _, n := range []string{"twofront", "twoback"} {
		leases, _ := os.ReadDir(filepath.Join("/var/lib/cni/networks", n))
		for _, e := range leases {
			if net.ParseIP(e.Name()) != nil {
				t.Errorf("an address lease of %s left: %s", n, e.Name())
			}
		}
	}
	l.must("network", "rm", "twofront", "twoback")
	for _, e := range mustReadDir(t, "/run/netns") {
		if strings.HasPrefix(e, "lodge-") {
			t.Errorf("network namespace left: %s", e)
		}
	}
	if after := hostLinks(t); len(after) != len(linksBefore) {
		t.Errorf("host interfaces after: %v, before: %v", after, linksBefore)
	}
}
