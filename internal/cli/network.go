package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The default bridge network, written where CNI configurations live (as
// nerdctl does) the first time a container joins it.
const (
	cniConfDir    = "/etc/cni/net.d"
	bridgeNetwork = "lodge"
	bridgeConf    = `{
  "cniVersion": "1.0.0",
  "name": "lodge",
  "plugins": [
    {"type": "bridge", "bridge": "lodge0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.87.0.0/16", "gateway": "10.87.0.1"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
`
)

var cniPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// portMap is one -p publication.
type portMap struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

func (p portMap) String() string {
	ip := p.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	}
	return fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Protocol)
}

// parsePort reads -p [IP:]HOST:CONTAINER[/PROTO].
func parsePort(s string) (portMap, error) {
	p := portMap{Protocol: "tcp"}
	spec, proto, ok := strings.Cut(s, "/")
	if ok {
		if proto != "tcp" && proto != "udp" {
			return p, fmt.Errorf("-p %q: protocol %q: want tcp or udp", s, proto)
		}
		p.Protocol = proto
	}
	parts := strings.Split(spec, ":")
	if len(parts) == 3 {
		if net.ParseIP(parts[0]) == nil {
			return p, fmt.Errorf("-p %q: %q is not an IP address", s, parts[0])
		}
		p.HostIP, parts = parts[0], parts[1:]
	}
	if len(parts) != 2 {
		return p, fmt.Errorf("-p %q: want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]", s)
	}
	var err error
	if p.HostPort, err = portNumber(parts[0]); err != nil {
		return p, fmt.Errorf("-p %q: %w", s, err)
	}
	if p.ContainerPort, err = portNumber(parts[1]); err != nil {
		return p, fmt.Errorf("-p %q: %w", s, err)
	}
	return p, nil
}

func portNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want 1-65535", s)
	}
	return n, nil
}

// ctrNetwork is a container's place on the bridge network.
type ctrNetwork struct {
	NetNS string    `json:"netns"`
	IP    string    `json:"ip,omitempty"`
	Ports []portMap `json:"ports,omitempty"`
}

func cniConfig() (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	path := filepath.Join(cniConfDir, bridgeNetwork+".conflist")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cniConfDir, 0o755); err != nil {
			return nil, nil, err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(bridgeConf), 0o644); err != nil {
			return nil, nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, nil, err
		}
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("network %s (%s): %w", bridgeNetwork, path, err)
	}
	return libcni.NewCNIConfig(cniPluginDirs, nil), list, nil
}

func runtimeConf(id string, n *ctrNetwork) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: n.NetNS, IfName: "eth0"}
	if len(n.Ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": n.Ports}
	}
	return rt
}

// joinBridge makes the container a network namespace on the bridge
// network with its published ports; the VM takes over its interface.
// On error nothing is left.
func joinBridge(ctx context.Context, id string, ports []portMap) (_ *ctrNetwork, retErr error) {
	if err := portsTaken(ports); err != nil {
		return nil, err
	}
	for _, p := range ports {
		if err := portFree(p); err != nil {
			return nil, err
		}
	}
	cni, list, err := cniConfig()
	if err != nil {
		return nil, err
	}
	nsName := "lodge-" + id[:12]
	path, err := newNetNS(nsName)
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	n := &ctrNetwork{NetNS: path, Ports: ports}
	defer func() {
		if retErr != nil {
			removeNetNS(path)
		}
	}()
	res, err := cni.AddNetworkList(ctx, list, runtimeConf(id, n))
	if err != nil {
		cni.DelNetworkList(context.WithoutCancel(ctx), list, runtimeConf(id, n))
		return nil, fmt.Errorf("network %s: %w (are containernetworking-plugins and iptables installed?)", bridgeNetwork, err)
	}
	n.IP = resultIP(res)
	return n, nil
}

// leaveBridge undoes joinBridge (idempotent: a second call finds nothing).
func leaveBridge(ctx context.Context, id string, n *ctrNetwork) error {
	if n == nil {
		return nil
	}
	var errs []error
	if cni, list, err := cniConfig(); err == nil {
		if err := cni.DelNetworkList(ctx, list, runtimeConf(id, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeNetNS(n.NetNS))
	return errors.Join(errs...)
}

// portsTaken refuses a host port another running container of lodge
// publishes (DNAT would send its traffic to one of them at random).
func portsTaken(ports []portMap) error {
	all, err := allCtrs()
	if err != nil {
		return err
	}
	for _, r := range all {
		if r.Network == nil {
			continue
		}
		if _, running := r.status(); !running {
			continue
		}
		for _, theirs := range r.Network.Ports {
			for _, p := range ports {
				sameIP := p.HostIP == theirs.HostIP || p.HostIP == "" || theirs.HostIP == "" || p.HostIP == "0.0.0.0" || theirs.HostIP == "0.0.0.0"
				if p.HostPort == theirs.HostPort && p.Protocol == theirs.Protocol && sameIP {
					return fmt.Errorf("-p %s: host port %d/%s is already published by container %s", p, p.HostPort, p.Protocol, r.Name)
				}
			}
		}
	}
	return nil
}

// portFree refuses a host port something already listens on (the
// bridge's DNAT would hide it, or it would hide the container).
func portFree(p portMap) error {
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
	if p.Protocol == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("-p %s: host port %d/udp is in use: %w", p, p.HostPort, err)
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-p %s: host port %d/tcp is in use: %w", p, p.HostPort, err)
	}
	return l.Close()
}

// newNetNS makes a named network namespace (/run/netns/NAME, as `ip netns
// add`), leaving the caller's thread where it was.
func newNetNS(name string) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return "", err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		// The thread is in the new namespace for good: let it die.
		runtime.LockOSThread()
		return "", serr
	}
	if err != nil {
		return "", err
	}
	ns.Close()
	return filepath.Join("/run/netns", name), nil
}

func removeNetNS(path string) error {
	if path == "" {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// networkFiles writes the container's /etc/hosts, /etc/resolv.conf and
// /etc/hostname (bind-mounted into it, as docker does).
func networkFiles(dir, hostname, ip string) (map[string]string, error) {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if ip != "" {
		hosts += ip + "\t" + hostname + "\n"
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil || !strings.Contains(string(resolv), "nameserver") {
		resolv = []byte("nameserver 8.8.8.8\n")
	}
	// A resolver on the host's loopback is not reachable from the guest.
	var lines []string
	for _, l := range strings.Split(string(resolv), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" && net.ParseIP(f[1]) != nil && net.ParseIP(f[1]).IsLoopback() {
			continue
		}
		lines = append(lines, l)
	}
	files := map[string]string{"/etc/hosts": hosts, "/etc/resolv.conf": strings.Join(lines, "\n"), "/etc/hostname": hostname + "\n"}
	out := map[string]string{}
	for dst, body := range files {
		p := filepath.Join(dir, filepath.Base(dst))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, err
		}
		out[dst] = p
	}
	return out, nil
}

// resultIP is the container's IPv4 address in a CNI result.
func resultIP(r cnitypes.Result) string {
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return ""
	}
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			return ip.Address.IP.String()
		}
	}
	return ""
}
