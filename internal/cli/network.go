package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/filelock"
)

// Networks are CNI configuration lists where CNI configurations live (as
// nerdctl keeps them), one bridge each; the default one, "bridge" on the
// command line, is written the first time a container joins it.
const (
	cniConfDir    = "/etc/cni/net.d"
	bridgeNetwork = "lodge"
)

// bridgeConf is a network's CNI list: bridge, host-local addresses,
// portmap for -p. Its NAT and forwarding are Lodge's, once per network
// (netrules.go), not the bridge plugin's ipMasq and the firewall
// plugin's, once per container. An internal network's containers get no
// default route, and its list says it is internal (Lodge's own key), so
// that its rules drop what would leave it; one without inter-container
// traffic (docker's enable_icc=false) says so too, and its rules drop
// what its containers send each other.
func bridgeConf(name, bridge, subnet, gateway string, mode netMode) string {
	lodge, routes := "", `[{"dst": "0.0.0.0/0"}]`
	if mode.internal {
		routes = `[]`
	}
	if mode != (netMode{}) {
		k := lodgeKey{Internal: mode.internal}
		if mode.noICC {
			k.ICC = new(bool) // false
		}
		b, _ := json.Marshal(k)
		lodge = "\n  \"lodge\": " + string(b) + ","
	}
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,%s
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q, "gateway": %q}]],
              "routes": %s}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, name, lodge, bridge, subnet, gateway, routes)
}

// netMode is how a network differs from docker's default bridge.
type netMode struct {
	internal bool // no way out (--internal)
	noICC    bool // its containers do not reach each other (enable_icc=false)
}

// lodgeKey is Lodge's own key of a network's list (libcni ignores it).
type lodgeKey struct {
	Internal bool  `json:"internal,omitempty"`
	ICC      *bool `json:"icc,omitempty"`
}

// networkPath is a network's list: lodge.conflist for the default one,
// lodge-net-NAME.conflist for one made with `lodge network create` (lodge
// lists and removes only those).
func networkPath(name string) string {
	if name == bridgeNetwork {
		return filepath.Join(cniConfDir, bridgeNetwork+".conflist")
	}
	return filepath.Join(cniConfDir, "lodge-net-"+name+".conflist")
}

var cniPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// ctrNetwork is a container's place on the bridge network.
type ctrNetwork struct {
	Name  string    `json:"name"` // the CNI network
	NetNS string    `json:"netns"`
	IP    string    `json:"ip,omitempty"`
	Ports []portMap `json:"ports,omitempty"`
	// Asked are the publications as asked for (-p, -P), a host port of 0
	// where the kernel picked it; nil in records from before.
	Asked []portMap `json:"asked,omitempty"`
	// Extra are the container's other networks (--network given more
	// than once): interfaces eth1, eth2... in the same namespace, with no
	// default route (the first network's is the container's).
	Extra []netLink `json:"extra,omitempty"`
	// FixedIP is the address asked for (--ip), kept by every start.
	FixedIP string `json:"fixed_ip,omitempty"`
	// Egress is what it may open connections to (--allow-out,
	// --deny-out), installed by every start.
	Egress *egress `json:"egress,omitempty"`
}

// netLink is one more network of a container.
type netLink struct {
	Name    string `json:"name"`
	IfName  string `json:"ifname"`
	IP      string `json:"ip,omitempty"`
	FixedIP string `json:"fixed_ip,omitempty"`
}

// names are the networks the container is on, its first one first.
func (n *ctrNetwork) names() []string {
	if n == nil {
		return nil
	}
	out := []string{n.Name}
	for _, l := range n.Extra {
		out = append(out, l.Name)
	}
	return out
}

// ipOn is the container's address on network name ("" if it is not on it).
func (n *ctrNetwork) ipOn(name string) string {
	if n == nil {
		return ""
	}
	if n.Name == name {
		return n.IP
	}
	for _, l := range n.Extra {
		if l.Name == name {
			return l.IP
		}
	}
	return ""
}

// asked is what a container started again publishes: the host ports it
// asked for, and new ones the kernel picks where it picked them before,
// as docker does.
func (n *ctrNetwork) asked() []portMap {
	if n.Asked != nil {
		return n.Asked
	}
	return n.Ports
}

// writeNetwork writes a network's list (atomically; an existing one is
// kept unless replace).
func writeNetwork(name, body string, replace bool) error {
	path := networkPath(name)
	if _, err := os.Stat(path); err == nil && !replace {
		return fmt.Errorf("network %s already exists", name)
	}
	if err := os.MkdirAll(cniConfDir, 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func cniConfig(name string) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	path := networkPath(name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if name != bridgeNetwork {
			return nil, nil, fmt.Errorf("no such network: %s (lodge network create %s)", name, name)
		}
		if err := writeNetwork(name, bridgeConf(name, "lodge0", "10.87.0.0/16", "10.87.0.1", netMode{}), false); err != nil {
			return nil, nil, err
		}
	}
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("network %s (%s): %w", name, path, err)
	}
	return libcni.NewCNIConfig(cniPluginDirs, nil), list, nil
}

func runtimeConf(id string, n *ctrNetwork, args [][2]string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: n.NetNS, IfName: "eth0", Args: args}
	if len(n.Ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": n.Ports}
	}
	return rt
}

// joinBridge makes the container a network namespace on the bridge
// network with its published ports, and on the extra networks; the VM
// takes over its interfaces. On error nothing is left.
func joinBridge(ctx context.Context, nets []netReq, id string, ports []portMap, eg *egress) (_ *ctrNetwork, retErr error) {
	network := nets[0].Name
	others, err := publishedPorts()
	if err != nil {
		return nil, err
	}
	if err := portsTaken(ports, others); err != nil {
		return nil, err
	}
	asked := ports
	if ports, err = assignHostPorts(ports, others); err != nil {
		return nil, err
	}
	for _, p := range ports {
		if err := portFree(p); err != nil {
			return nil, err
		}
	}
	cni, list, err := cniConfig(network)
	if err != nil {
		return nil, err
	}
	pol := confRules(list.Bytes)
	if pol.internal && len(ports) > 0 {
		return nil, fmt.Errorf("network %s is internal (no way in or out of it): no port can be published from it (-p); join another network first", network)
	}
	args, err := ipArgs(network, list.Bytes, nets[0].IP)
	if err != nil {
		return nil, err
	}
	if pol.subnet != "" {
		if err := ensureNetworkRules(ctx, network, pol); err != nil {
			return nil, fmt.Errorf("network %s: NAT and forwarding: %w", network, err)
		}
	}
	nsName := "lodge-" + id[:12]
	path, err := newNetNS(nsName)
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	n := &ctrNetwork{Name: network, NetNS: path, Ports: ports, Asked: asked, FixedIP: nets[0].IP}
	defer func() {
		if retErr != nil {
			removeNetNS(path)
		}
	}()
	res, err := cni.AddNetworkList(ctx, list, runtimeConf(id, n, args))
	if err != nil {
		cni.DelNetworkList(context.WithoutCancel(ctx), list, runtimeConf(id, n, nil))
		return nil, fmt.Errorf("network %s: %w%s", network, err, joinHint(nets[0].IP))
	}
	n.IP = resultIP(res)
	defer func() {
		if retErr != nil {
			leaveExtra(context.WithoutCancel(ctx), id, n)
			cni.DelNetworkList(context.WithoutCancel(ctx), list, runtimeConf(id, n, nil))
		}
	}()
	if err := stableMAC(path, "eth0", n.IP); err != nil {
		return nil, fmt.Errorf("network %s: %w", network, err)
	}
	for i, r := range nets[1:] {
		if err := joinExtra(ctx, id, n, r, fmt.Sprintf("eth%d", i+1)); err != nil {
			return nil, err
		}
	}
	if eg != nil {
		if err := applyEgress(ctx, id, n.ips(), eg); err != nil {
			return nil, fmt.Errorf("--allow-out/--deny-out: %w", err)
		}
		n.Egress = eg
	}
	return n, nil
}

// joinExtra attaches the container's namespace to one more network, as
// interface ifname, without the network's default route.
func joinExtra(ctx context.Context, id string, n *ctrNetwork, r netReq, ifname string) error {
	name := r.Name
	cni, list, err := extraConfig(name)
	if err != nil {
		return err
	}
	args, err := ipArgs(name, list.Bytes, r.IP)
	if err != nil {
		return err
	}
	if pol := confRules(list.Bytes); pol.subnet != "" {
		if err := ensureNetworkRules(ctx, name, pol); err != nil {
			return fmt.Errorf("network %s: NAT and forwarding: %w", name, err)
		}
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: n.NetNS, IfName: ifname, Args: args}
	res, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		rt.Args = nil
		cni.DelNetworkList(context.WithoutCancel(ctx), list, rt)
		return fmt.Errorf("network %s: %w%s", name, err, joinHint(r.IP))
	}
	ip := resultIP(res)
	if err := stableMAC(n.NetNS, ifname, ip); err != nil {
		rt.Args = nil
		cni.DelNetworkList(context.WithoutCancel(ctx), list, rt)
		return fmt.Errorf("network %s: %w", name, err)
	}
	n.Extra = append(n.Extra, netLink{Name: name, IfName: ifname, IP: ip, FixedIP: r.IP})
	return nil
}

// extraConfig is a network's list for a container's extra interface:
// its bridge and addresses without a default route or published ports.
func extraConfig(name string) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	cni, list, err := cniConfig(name)
	if err != nil {
		return nil, nil, err
	}
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, nil, fmt.Errorf("network %s: %w", name, err)
	}
	list0, ok := raw["plugins"].([]any)
	if !ok {
		return nil, nil, fmt.Errorf("network %s: its list has no plugins", name)
	}
	var plugins []any
	for _, p := range list0 {
		pm, ok := p.(map[string]any)
		if !ok || pm["type"] == "portmap" {
			continue
		}
		if ipam, ok := pm["ipam"].(map[string]any); ok {
			delete(ipam, "routes")
		}
		plugins = append(plugins, pm)
	}
	raw["plugins"] = plugins
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, nil, err
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("network %s: %w", name, err)
	}
	return cni, l, nil
}

// leaveExtra detaches the container's extra interfaces (what it can).
func leaveExtra(ctx context.Context, id string, n *ctrNetwork) error {
	var errs []error
	for _, l := range n.Extra {
		cni, list, err := extraConfig(l.Name)
		if err == nil {
			err = cni.DelNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: id, NetNS: n.NetNS, IfName: l.IfName})
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leaveBridge undoes joinBridge (idempotent: a second call finds nothing).
func leaveBridge(ctx context.Context, id string, n *ctrNetwork) error {
	if n == nil {
		return nil
	}
	// The container's monitor, as the container ends, and `rm -f` may
	// both leave at once: one at a time, or the second finds the interface
	// half deleted (the bridge plugin's "failed to delete eth0: no such
	// device"). The lock lives in the container's directory: once that is
	// gone, so is the other.
	if unlock, err := filelock.Lock(ctx, filepath.Join(ctrDir(id), "network.lock"), true); err == nil {
		defer unlock()
	}
	var errs []error
	if n.Egress != nil { // before its addresses can go to another
		errs = append(errs, removeEgress(ctx, id))
	}
	errs = append(errs, leaveExtra(ctx, id, n))
	name := n.Name
	if name == "" {
		name = bridgeNetwork
	}
	if cni, list, err := cniConfig(name); err == nil {
		if err := cni.DelNetworkList(ctx, list, runtimeConf(id, n, nil)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeNetNS(n.NetNS))
	// The others on its networks forget its name.
	for _, nn := range n.names() {
		errs = append(errs, refreshHosts(ctx, nn))
	}
	return errors.Join(errs...)
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
func networkFiles(dir, hostname, ip string, conf *netFilesConf) (map[string]string, error) {
	if conf == nil {
		conf = &netFilesConf{}
	}
	hosts := hostsBody(hostname, ip, conf)
	files := map[string]string{"/etc/hosts": hosts, "/etc/resolv.conf": resolvConf(conf), "/etc/hostname": hostname + "\n"}
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

// resolvConf is a container's /etc/resolv.conf: the host's, without a
// resolver on its loopback (which the guest cannot reach), with --dns,
// --dns-search and --dns-option in place of the host's lines of their
// kind, as docker's do.
func resolvConf(conf *netFilesConf) string {
	if conf == nil {
		conf = &netFilesConf{}
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil || !strings.Contains(string(resolv), "nameserver") {
		resolv = []byte("nameserver 8.8.8.8\n")
	}
	var lines []string
	for _, l := range strings.Split(string(resolv), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "nameserver" && net.ParseIP(f[1]) != nil && net.ParseIP(f[1]).IsLoopback(),
			len(f) > 0 && f[0] == "nameserver" && len(conf.DNS) > 0,
			len(f) > 0 && (f[0] == "search" || f[0] == "domain") && len(conf.Search) > 0,
			len(f) > 0 && f[0] == "options" && len(conf.Options) > 0:
			continue
		}
		lines = append(lines, l)
	}
	for _, d := range conf.DNS {
		lines = append(lines, "nameserver "+d)
	}
	if len(conf.Search) > 0 {
		lines = append(lines, "search "+strings.Join(conf.Search, " "))
	}
	if len(conf.Options) > 0 {
		lines = append(lines, "options "+strings.Join(conf.Options, " "))
	}
	if len(lines) > 0 && lines[len(lines)-1] != "" {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n")
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

// lodgeNetworks lists the networks lodge made.
func lodgeNetworks() ([]*libcni.NetworkConfigList, error) {
	files, err := filepath.Glob(filepath.Join(cniConfDir, "lodge-net-*.conflist"))
	if err != nil {
		return nil, err
	}
	var out []*libcni.NetworkConfigList
	for _, f := range append([]string{networkPath(bridgeNetwork)}, files...) {
		if l, err := libcni.ConfListFromFile(f); err == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

func addNetworkCommands(root *cobra.Command) {
	nw := &cobra.Command{Use: "network", Short: "manage bridge networks"}
	var subnet string
	var internal bool
	var opts []string
	create := &cobra.Command{
		Use:   "create [--subnet CIDR] [--internal] [-o com.docker.network.bridge.enable_icc=false] NAME",
		Short: "create a bridge network",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !validName(name) || name == "bridge" || name == "none" || name == "host" {
				return fmt.Errorf("invalid network name %q", name)
			}
			noICC, err := networkOpts(opts)
			if err != nil {
				return err
			}
			if err := createNetwork(name, subnet, netMode{internal: internal, noICC: noICC}); err != nil {
				return err
			}
			emit("network", "create", name, map[string]string{"name": name, "type": "bridge"})
			fmt.Fprintln(cmd.OutOrStdout(), name)
			return nil
		},
	}
	create.Flags().StringVar(&subnet, "subnet", "", "IPv4 subnet (default: the next free 10.N.0.0/16)")
	create.Flags().BoolVar(&internal, "internal", false, "no way out: its containers reach each other and the host, nothing beyond, and publish no ports")
	create.Flags().StringArrayVarP(&opts, "opt", "o", nil, "a driver option: com.docker.network.bridge.enable_icc=false keeps its containers from reaching each other (they reach the host and beyond)")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "list networks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nets, err := lodgeNetworks()
			if err != nil {
				return err
			}
			type row struct{ Name, Driver, File string }
			rows := []row{{"none", "null", ""}}
			for _, l := range nets {
				rows = append(rows, row{l.Name, "bridge", networkPath(l.Name)})
			}
			return printList(cmd.OutOrStdout(), rows, "table", "NETWORK NAME\tDRIVER", func(r row) string { return r.Name + "\t" + r.Driver })
		},
	}
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "remove networks no container uses",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, n := range args {
				if n == bridgeNetwork || n == "bridge" {
					errs = append(errs, errors.New("the default network cannot be removed"))
					continue
				}
				if users := networkUsers(n); len(users) > 0 {
					errs = append(errs, fmt.Errorf("network %s is in use by %s", n, strings.Join(users, ", ")))
					continue
				}
				if _, err := os.Stat(networkPath(n)); err != nil {
					errs = append(errs, fmt.Errorf("no such network: %s", n))
					continue
				}
				if err := removeNetwork(cmd.Context(), n); err != nil {
					errs = append(errs, err)
					continue
				}
				emit("network", "destroy", n, map[string]string{"name": n, "type": "bridge"})
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return errors.Join(errs...)
		},
	}
	nw.AddCommand(create, ls, rm)
	addNetworkConnectCommands(nw)
	root.AddCommand(nw)
}

// cniIPAMDir is where host-local, the networks' address plugin, keeps
// each network's leases (its default dataDir), one directory per network.
const cniIPAMDir = "/var/lib/cni/networks"

// removeNetwork removes network name's NAT and forwarding rules, its list,
// the bridge its first container made (with the bridge's address and
// route on the host) and host-local's leases of it (a network of that
// name made later starts with none).
func removeNetwork(ctx context.Context, name string) error {
	if !validName(name) {
		return fmt.Errorf("network %q: not a network name", name)
	}
	conf, _ := os.ReadFile(networkPath(name))
	if pol := confRules(conf); pol.subnet != "" {
		if err := removeNetworkRules(ctx, name, pol); err != nil {
			return fmt.Errorf("network %s: remove its NAT and forwarding: %w", name, err)
		}
	}
	if err := os.Remove(networkPath(name)); err != nil {
		return err
	}
	if br := confBridge(conf); br != "" {
		if err := deleteLink(br); err != nil {
			return fmt.Errorf("network %s: remove its bridge %s: %w", name, br, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(cniIPAMDir, name)); err != nil {
		return fmt.Errorf("network %s: remove its address leases: %w", name, err)
	}
	os.Remove(filepath.Join(runtimeState, "hosts-"+name+".lock")) // of an older lodge's
	return nil
}

// bridgeName is the host bridge of network name: "lodge-NAME", or, where
// that is longer than an interface name may be, "lodge-" and a hash of
// NAME (two long names must not share a bridge).
func bridgeName(name string) string {
	if b := "lodge-" + name; len(b) <= unix.IFNAMSIZ-1 {
		return b
	}
	sum := sha256.Sum256([]byte(name))
	return "lodge-" + hex.EncodeToString(sum[:])[:unix.IFNAMSIZ-1-len("lodge-")]
}

// cniList is what Lodge reads of a network's CNI list (confBridge,
// confRules).
type cniList struct {
	Lodge   lodgeKey `json:"lodge"`
	Plugins []struct {
		Type, Bridge string
		IPMasq       bool `json:"ipMasq"`
		IPAM         struct {
			Ranges [][]struct{ Subnet, Gateway string }
		}
	}
}

func parseList(conf []byte) (cniList, bool) {
	var l cniList
	return l, json.Unmarshal(conf, &l) == nil
}

// confBridge is the bridge a network list's bridge plugin names.
func confBridge(conf []byte) string {
	l, ok := parseList(conf)
	if !ok {
		return ""
	}
	for _, p := range l.Plugins {
		if p.Type == "bridge" {
			return p.Bridge
		}
	}
	return ""
}

// deleteLink deletes the host interface name, if there is one.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return netlink.LinkDel(l)
}

// hostSubnets are the networks of the host's interface addresses.
func hostSubnets() []*net.IPNet {
	addrs, _ := net.InterfaceAddrs()
	var out []*net.IPNet
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			out = append(out, &net.IPNet{IP: n.IP.Mask(n.Mask), Mask: n.Mask})
		}
	}
	return out
}

// networkUsers are the containers (any state) on the network.
func networkUsers(name string) []string {
	all, _ := allCtrs()
	var out []string
	for _, r := range all {
		if slices.Contains(r.Network.names(), name) {
			out = append(out, r.Name)
		}
	}
	return out
}

// networkSettings is inspect's NetworkSettings in docker's shape: the
// address, the published ports and the network, while the container runs
// (docker shows none for a stopped one).
func networkSettings(n *ctrNetwork, aliases []string, running bool) map[string]any {
	out := map[string]any{"IPAddress": "", "Ports": map[string]any{}, "Networks": map[string]any{}, "SandboxKey": ""}
	if n == nil || !running {
		return out
	}
	ports := map[string][]map[string]string{}
	for _, p := range n.Ports {
		k := fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		ports[k] = append(ports[k], map[string]string{"HostIp": ip, "HostPort": strconv.Itoa(p.HostPort)})
	}
	name := n.Name
	if name == "" {
		name = bridgeNetwork
	}
	out["IPAddress"], out["Ports"], out["SandboxKey"] = n.IP, ports, n.NetNS
	endpoint := func(ip, fixed string) map[string]any {
		e := map[string]any{"IPAddress": ip, "Aliases": aliases}
		if fixed != "" {
			e["IPAMConfig"] = map[string]string{"IPv4Address": fixed}
		}
		return e
	}
	nets := map[string]any{name: endpoint(n.IP, n.FixedIP)}
	for _, l := range n.Extra {
		nets[l.Name] = endpoint(l.IP, l.FixedIP)
	}
	out["Networks"] = nets
	return out
}
