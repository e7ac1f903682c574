package netsetup

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

// testNetNS makes a network namespace holding eth0 (a veth whose peer stays
// on the host) with an address and a default route, as CNI would.
func testNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	name := fmt.Sprintf("lodgetest-ns-%d", os.Getpid())
	peer := fmt.Sprintf("lodgeveth%d", os.Getpid()%100000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run(); exec.Command("ip", "link", "del", peer).Run() })
	run("link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", name)
	run("-n", name, "link", "set", "eth0", "mtu", "1400", "up")
	run("-n", name, "addr", "add", "10.123.0.5/24", "dev", "eth0")
	run("-n", name, "route", "add", "default", "via", "10.123.0.1")
	return "/var/run/netns/" + name
}

func inNS(t *testing.T, path string, args ...string) string {
	t.Helper()
	out, _ := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...).CombinedOutput()
	return string(out)
}

func TestAttachDetach(t *testing.T) {
	path := testNetNS(t)
	a, err := Attach(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Interfaces) != 1 || len(a.Links) != 1 {
		t.Fatalf("attachment: %+v", a)
	}
	in := a.Interfaces[0]
	if in.Name != "eth0" || in.MTU != 1400 || len(in.Addrs) != 1 || in.Addrs[0] != "10.123.0.5/24" {
		t.Errorf("interface: %+v", in)
	}
	if _, err := net.ParseMAC(in.MAC); err != nil {
		t.Errorf("MAC %q: %v", in.MAC, err)
	}
	if len(a.Routes) != 1 || a.Routes[0].Dest != "" || a.Routes[0].Gateway != "10.123.0.1" || a.Routes[0].Device != "eth0" {
		t.Errorf("routes (want only the default one): %+v", a.Routes)
	}
	if a.Links[0].File == nil {
		t.Error("no tap queue for the VMM")
	}
	for dev, to := range map[string]string{"eth0": "lodgetap0", "lodgetap0": "eth0"} {
		if out := inNS(t, path, "tc", "filter", "show", "dev", dev, "ingress"); !strings.Contains(out, "Redirect to device "+to) {
			t.Errorf("no redirect %s -> %s:\n%s", dev, to, out)
		}
	}
	if out := inNS(t, path, "ip", "link", "show", "lodgetap0"); !strings.Contains(out, "mtu 1400") || !strings.Contains(out, "UP") {
		t.Errorf("tap: %s", out)
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	if out := inNS(t, path, "ip", "link", "show", "lodgetap0"); !strings.Contains(out, "does not exist") {
		t.Errorf("tap left after Detach: %s", out)
	}
	if out := inNS(t, path, "tc", "qdisc", "show", "dev", "eth0", "ingress"); strings.Contains(out, "ingress") {
		t.Errorf("ingress qdisc left after Detach: %s", out)
	}
}

// The hook model (Docker): the tap first, the interface later. No
// interface gives an empty attachment; once one is there it is wired to
// the tap; a second one is refused.
func TestAttachTapLater(t *testing.T) {
	path := testNetNS(t)
	empty := fmt.Sprintf("lodgetest-ns-e%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", empty).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", empty).Run() })
	emptyPath := "/var/run/netns/" + empty
	f, err := NewTap(emptyPath, "lodgetap0")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if a, err := AttachTap(emptyPath, "lodgetap0"); err != nil || len(a.Interfaces) != 0 || len(a.Links) != 0 {
		t.Fatalf("a namespace with no interface: %+v, %v", a, err)
	}
	// What a hook does: an interface appears, with its address and route.
	if out, err := exec.Command("nsenter", "--net="+path, "ip", "link", "set", "eth0", "netns", emptyPath).CombinedOutput(); err != nil {
		t.Fatalf("move eth0: %v: %s", err, out)
	}
	for _, args := range [][]string{{"link", "set", "eth0", "mtu", "1400", "up"}, {"addr", "add", "10.123.0.5/24", "dev", "eth0"}, {"route", "add", "default", "via", "10.123.0.1"}} {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + emptyPath, "ip"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	a, err := AttachTap(emptyPath, "lodgetap0")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Interfaces) != 1 || a.Interfaces[0].Name != "eth0" || a.Interfaces[0].MTU != 1400 || a.Interfaces[0].Addrs[0] != "10.123.0.5/24" ||
		len(a.Routes) != 1 || a.Routes[0].Gateway != "10.123.0.1" {
		t.Errorf("attachment: %+v", a)
	}
	for dev, to := range map[string]string{"eth0": "lodgetap0", "lodgetap0": "eth0"} {
		if out := inNS(t, emptyPath, "tc", "filter", "show", "dev", dev, "ingress"); !strings.Contains(out, "Redirect to device "+to) {
			t.Errorf("no redirect %s -> %s:\n%s", dev, to, out)
		}
	}
	if out, err := exec.Command("nsenter", "--net="+emptyPath, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth2").CombinedOutput(); err != nil {
		t.Fatalf("add veth: %v: %s", err, out)
	}
	if _, err := AttachTap(emptyPath, "lodgetap0"); err == nil || !strings.Contains(err.Error(), "one NIC") {
		t.Errorf("three interfaces for one NIC: %v", err)
	}
}

func TestForwardLocalhost(t *testing.T) {
	path := testNetNS(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables")
	}
	// The "guest" is a server on the host side, dialled with the port the
	// client asked for.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "hello")
			c.Close()
		}
	}()
	var (
		mu    sync.Mutex // the forwarder dials from its own goroutines
		asked []uint16
	)
	fwd, err := ForwardLocalhost(path, func(port uint16) (net.Conn, error) {
		mu.Lock()
		asked = append(asked, port)
		mu.Unlock()
		return net.Dial("tcp", l.Addr().String())
	}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	// A client in the pod's namespace connects to localhost:8080, as
	// CRI's port forwarding does.
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var c net.Conn
	if err := inNetNS(ns, func() (err error) { c, err = net.Dial("tcp4", "localhost:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	mu.Lock()
	ports := append([]uint16(nil), asked...)
	mu.Unlock()
	if string(got) != "hello" || len(ports) != 1 || ports[0] != 8080 {
		t.Errorf("forwarded: %q, ports asked %v", got, ports)
	}
	if err := fwd.Close(); err != nil {
		t.Fatal(err)
	}
	if out := inNS(t, path, "iptables", "-t", "nat", "-S", "OUTPUT"); strings.Contains(out, "lodge port-forward") {
		t.Errorf("nat rule left after Close:\n%s", out)
	}
}

// A teardown after the engine removed the pod's namespace (its mount
// point left a plain file, or gone) finds nothing to do, as the
// namespace went with its interfaces.
func TestTeardownOfUnmountedNamespace(t *testing.T) {
	left := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(left, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := Teardown(left, []string{"eth0"}, []string{"tap0"}); err != nil {
		t.Errorf("teardown of an unmounted namespace: %v", err)
	}
	if err := Teardown(filepath.Join(t.TempDir(), "gone"), []string{"eth0"}, nil); err != nil {
		t.Errorf("teardown of a removed namespace: %v", err)
	}
}
