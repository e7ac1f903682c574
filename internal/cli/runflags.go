package cli

// docker run's flags for a container's privileges, limits, names and stop:
// --cap-add/--cap-drop, --privileged, --pids-limit, --ulimit, --tmpfs,
// --sysctl, --shm-size, --add-host, --dns*, --label, --stop-signal,
// --stop-timeout. Each becomes part of the container's OCI spec, which
// the guest enforces: what they grant reaches the container's own guest
// kernel, never the host's.

import (
	"fmt"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/pflag"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// specOpts are those flags' values.
type specOpts struct {
	capAdd, capDrop    []string
	privileged         bool
	pidsLimit          int64
	ulimits, tmpfs     []string
	sysctls, labels    []string
	shmSize            string
	stopSignal         string
	stopTimeout        int // -1: not given
	addHosts, dns      []string
	dnsSearch, dnsOpts []string
	aliases            []string // --network-alias
	storageOpts        []string // --storage-opt
}

func addSpecFlags(f *pflag.FlagSet, o *specOpts) {
	f.StringArrayVar(&o.capAdd, "cap-add", nil, "add a capability (CAP_NET_ADMIN or NET_ADMIN; ALL)")
	f.StringArrayVar(&o.capDrop, "cap-drop", nil, "drop a capability (ALL drops every one)")
	f.BoolVar(&o.privileged, "privileged", false, "every capability, no seccomp filter, no masked paths: the root of the container's own guest (never the host's)")
	f.Int64Var(&o.pidsLimit, "pids-limit", 0, "most processes at once (0: no limit)")
	f.StringArrayVar(&o.ulimits, "ulimit", nil, "a resource limit: NAME=SOFT[:HARD] (nofile, nproc, core, memlock, stack, ...)")
	f.StringArrayVar(&o.tmpfs, "tmpfs", nil, "a tmpfs at PATH[:OPTIONS] (default rw,noexec,nosuid,size=65536k)")
	f.StringArrayVar(&o.sysctls, "sysctl", nil, "a namespaced sysctl: NAME=VALUE (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")
	f.StringVar(&o.shmSize, "shm-size", "", "size of /dev/shm (e.g. 128m; default 64m)")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "a label: KEY=VALUE")
	f.StringVar(&o.stopSignal, "stop-signal", "", "the signal lodge stop sends first (default: the image's, else SIGTERM)")
	f.IntVar(&o.stopTimeout, "stop-timeout", -1, "seconds lodge stop waits before SIGKILL (default 10)")
	f.StringArrayVar(&o.addHosts, "add-host", nil, "a line of /etc/hosts: HOST:IP")
	f.StringArrayVar(&o.dns, "dns", nil, "a name server for /etc/resolv.conf")
	f.StringArrayVar(&o.dnsSearch, "dns-search", nil, "a search domain for /etc/resolv.conf")
	f.StringArrayVar(&o.dnsOpts, "dns-option", nil, "an option for /etc/resolv.conf")
	f.StringArrayVar(&o.storageOpts, "storage-opt", nil, "a storage option: size=SIZE, its writable layer's size (e.g. 20g; default [layers] writable_gib)")
	f.StringArrayVar(&o.aliases, "network-alias", nil, "another name the containers on its network (one made with lodge network create) find it by")
}

// capName is a capability as the spec names it (net_admin -> CAP_NET_ADMIN).
func capName(s string) (string, error) {
	c := strings.ToUpper(s)
	if c == "ALL" {
		return c, nil
	}
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	if !slices.Contains(oci.AllCaps, c) {
		return "", fmt.Errorf("unknown capability %q", s)
	}
	return c, nil
}

// capabilities applies --cap-add and --cap-drop to base as docker does:
// with --cap-add ALL, every capability but those dropped; else base less
// those dropped (--cap-drop ALL: none), plus those added.
func capabilities(base []string, add, drop []string) ([]string, error) {
	names := func(flag string, list []string) ([]string, error) {
		var out []string
		for _, x := range list {
			c, err := capName(x)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", flag, err)
			}
			out = append(out, c)
		}
		return out, nil
	}
	adds, err := names("--cap-add", add)
	if err != nil {
		return nil, err
	}
	drops, err := names("--cap-drop", drop)
	if err != nil {
		return nil, err
	}
	set := slices.Clone(base)
	switch {
	case slices.Contains(adds, "ALL"):
		set, adds = slices.Clone(oci.AllCaps), nil
	case slices.Contains(drops, "ALL"):
		set, drops = nil, nil
	}
	set = slices.DeleteFunc(set, func(x string) bool { return slices.Contains(drops, x) })
	for _, c := range adds {
		if !slices.Contains(set, c) {
			set = append(set, c)
		}
	}
	return set, nil
}

var rlimitNames = map[string]string{"core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
	"locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE", "nice": "RLIMIT_NICE",
	"nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS", "rtprio": "RLIMIT_RTPRIO",
	"rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING", "stack": "RLIMIT_STACK", "as": "RLIMIT_AS"}

// parseUlimit reads NAME=SOFT[:HARD] (-1: unlimited).
func parseUlimit(s string) (specs.POSIXRlimit, error) {
	n, v, ok := strings.Cut(s, "=")
	typ := rlimitNames[n]
	if !ok || typ == "" {
		return specs.POSIXRlimit{}, fmt.Errorf("--ulimit %q: want NAME=SOFT[:HARD], NAME one of nofile, nproc, core, memlock, stack, ...", s)
	}
	num := func(x string) (uint64, error) {
		if x == "-1" || x == "unlimited" {
			return ^uint64(0), nil
		}
		return strconv.ParseUint(x, 10, 64)
	}
	softS, hardS, hasHard := strings.Cut(v, ":")
	soft, err := num(softS)
	if err != nil {
		return specs.POSIXRlimit{}, fmt.Errorf("--ulimit %q: %w", s, err)
	}
	hard := soft
	if hasHard {
		if hard, err = num(hardS); err != nil {
			return specs.POSIXRlimit{}, fmt.Errorf("--ulimit %q: %w", s, err)
		}
	}
	if soft > hard {
		return specs.POSIXRlimit{}, fmt.Errorf("--ulimit %q: the soft limit is above the hard one", s)
	}
	return specs.POSIXRlimit{Type: typ, Soft: soft, Hard: hard}, nil
}

// namespacedSysctl says whether a sysctl belongs to the container's own
// namespaces (docker's rule), so that setting it touches no other
// container.
func namespacedSysctl(name string) bool {
	if slices.Contains([]string{"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
		"kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}, name) {
		return true
	}
	return strings.HasPrefix(name, "net.") || strings.HasPrefix(name, "fs.mqueue.")
}

// applySpecOpts puts o into spec; it runs before the seccomp profile is
// chosen (docker's profile follows the capabilities).
func applySpecOpts(spec *specs.Spec, o specOpts) error {
	p := spec.Process
	caps := p.Capabilities.Bounding
	if o.privileged {
		caps = slices.Clone(oci.AllCaps)
	}
	caps, err := capabilities(caps, o.capAdd, o.capDrop)
	if err != nil {
		return err
	}
	p.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: slices.Clone(caps)}
	if o.privileged {
		spec.Linux.Devices = append(spec.Linux.Devices, privilegedDevices()...)
		spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths = nil, nil
		for i, m := range spec.Mounts {
			if m.Type == "sysfs" || m.Type == "cgroup" || m.Type == "cgroup2" {
				spec.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(x string) bool { return x == "ro" })
			}
		}
	}
	for _, u := range o.ulimits {
		rl, err := parseUlimit(u)
		if err != nil {
			return err
		}
		p.Rlimits = append(slices.DeleteFunc(p.Rlimits, func(x specs.POSIXRlimit) bool { return x.Type == rl.Type }), rl)
	}
	if o.pidsLimit < 0 {
		return fmt.Errorf("--pids-limit %d: want a number of processes, or 0 for none", o.pidsLimit)
	}
	if o.pidsLimit > 0 {
		n := o.pidsLimit
		spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &n}
	}
	for _, s := range o.sysctls {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("--sysctl %q: want NAME=VALUE", s)
		}
		if !namespacedSysctl(k) {
			return fmt.Errorf("--sysctl %s: not a namespaced sysctl (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)", k)
		}
		if spec.Linux.Sysctl == nil {
			spec.Linux.Sysctl = map[string]string{}
		}
		spec.Linux.Sysctl[k] = v
	}
	if o.shmSize != "" {
		n, err := parseBytes(o.shmSize)
		if err != nil || n <= 0 {
			return fmt.Errorf("--shm-size %q: want a size such as 128m", o.shmSize)
		}
		for i, m := range spec.Mounts {
			if m.Destination == "/dev/shm" {
				opts := slices.DeleteFunc(slices.Clone(m.Options), func(x string) bool { return strings.HasPrefix(x, "size=") })
				spec.Mounts[i].Options = append(opts, fmt.Sprintf("size=%dk", (n+1023)/1024))
			}
		}
	}
	for _, t := range o.tmpfs {
		dst, opts, _ := strings.Cut(t, ":")
		if !path.IsAbs(dst) {
			return fmt.Errorf("--tmpfs %q: the path must be absolute", t)
		}
		options := []string{"rw", "noexec", "nosuid", "size=65536k"}
		if opts != "" {
			options = strings.Split(opts, ",")
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: path.Clean(dst), Type: "tmpfs", Source: "tmpfs", Options: options})
	}
	return nil
}

// readLabelFiles reads --label-file files: KEY=VALUE lines (blank ones
// and # comments skipped), as --label values.
func readLabelFiles(files []string) ([]string, error) {
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--label-file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				out = append(out, line)
			}
		}
	}
	return out, nil
}

// labelMap reads --label KEY=VALUE values.
func labelMap(labels []string) (map[string]string, error) {
	if len(labels) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		m[k] = v
	}
	return m, nil
}

// netFilesConf is what a container's /etc/hosts and /etc/resolv.conf
// take from the command line (kept in its record: a start again writes
// them anew).
type netFilesConf struct {
	ExtraHosts []string `json:"extra_hosts,omitempty"` // HOST:IP
	DNS        []string `json:"dns,omitempty"`
	Search     []string `json:"dns_search,omitempty"`
	Options    []string `json:"dns_options,omitempty"`
	// Aliases are --network-alias's: names the other containers on its
	// network find it by, besides its name (hosts.go).
	Aliases []string `json:"aliases,omitempty"`
}

func (o specOpts) netFiles() (*netFilesConf, error) {
	for _, h := range o.addHosts {
		host, ip, ok := strings.Cut(h, ":")
		if !ok || host == "" || net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("--add-host %q: want HOST:IP", h)
		}
	}
	for _, d := range o.dns {
		if net.ParseIP(d) == nil {
			return nil, fmt.Errorf("--dns %q: not an IP address", d)
		}
	}
	for _, a := range o.aliases {
		if !validHostname(a) {
			return nil, fmt.Errorf("--network-alias %q: want a host name (letters, digits, '-', '.')", a)
		}
	}
	if len(o.addHosts)+len(o.dns)+len(o.dnsSearch)+len(o.dnsOpts)+len(o.aliases) == 0 {
		return nil, nil
	}
	return &netFilesConf{ExtraHosts: o.addHosts, DNS: o.dns, Search: o.dnsSearch, Options: o.dnsOpts, Aliases: o.aliases}, nil
}

// privilegedDevices are the nodes --privileged adds to a container's /dev:
// docker's gives every device of its host; a Lodge container's host is
// its own guest, whose devices (besides the VM's own disks and ports) are
// these: FUSE, TUN/TAP and loop devices (mount -o loop, losetup).
func privilegedDevices() []specs.LinuxDevice {
	mode := func(m os.FileMode) *os.FileMode { return &m }
	var zero uint32
	devs := []specs.LinuxDevice{
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: mode(0o666), UID: &zero, GID: &zero},
		{Path: "/dev/net/tun", Type: "c", Major: 10, Minor: 200, FileMode: mode(0o666), UID: &zero, GID: &zero},
		{Path: "/dev/loop-control", Type: "c", Major: 10, Minor: 237, FileMode: mode(0o660), UID: &zero, GID: &zero},
	}
	for i := range 8 {
		devs = append(devs, specs.LinuxDevice{Path: fmt.Sprintf("/dev/loop%d", i), Type: "b", Major: 7, Minor: int64(i),
			FileMode: mode(0o660), UID: &zero, GID: &zero})
	}
	return devs
}
