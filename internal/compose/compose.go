// Package compose reads Compose files with compose-go (the Compose
// specification's own loader, which docker compose and nerdctl compose
// use: interpolation, .env and env_file, extends, include, profiles,
// merging of several files) and turns each service into the `lodge`
// command lines that make it: a network made with `lodge network create`
// per Compose network, a named volume per Compose volume, and `lodge run
// -d` per container, labelled as docker compose labels them.
//
// What `lodge` cannot give a service as Compose asks is refused with the
// service and the key named, never dropped silently: the host's network
// or another container's namespaces, devices and GPUs, fixed IPv6 and MAC
// addresses.
package compose

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// Labels docker compose puts on its containers; lodge compose finds its
// containers by them.
const (
	LabelProject    = "com.docker.compose.project"
	LabelService    = "com.docker.compose.service"
	LabelNumber     = "com.docker.compose.container-number"
	LabelOneoff     = "com.docker.compose.oneoff"
	LabelConfigHash = "com.docker.compose.config-hash"
	LabelWorkingDir = "com.docker.compose.project.working_dir"
	LabelFiles      = "com.docker.compose.project.config_files"
)

// Options are the project's: lodge compose's global flags.
type Options struct {
	Files    []string // -f (none: compose.yaml, docker-compose.yml ... here or above)
	Name     string   // -p (default: the project directory's name)
	WorkDir  string   // --project-directory (default: the first file's directory)
	EnvFiles []string // --env-file (default: .env in the project directory)
	Profiles []string // --profile
}

// Load reads the project.
func Load(ctx context.Context, o Options) (*types.Project, error) {
	po, err := cli.NewProjectOptions(o.Files,
		cli.WithWorkingDirectory(o.WorkDir),
		cli.WithOsEnv,
		cli.WithEnvFiles(o.EnvFiles...),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithProfiles(o.Profiles),
		cli.WithName(o.Name),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	if len(po.ConfigPaths) == 0 {
		return nil, errors.New("no Compose file here or in a directory above: compose.yaml, compose.yml, docker-compose.yml or docker-compose.yaml (or -f FILE)")
	}
	p, err := po.LoadProject(ctx)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Order is the services named (all when none), each after the services
// it depends on; names sorted where the order is free.
func Order(p *types.Project, names []string) ([]string, error) {
	if len(names) == 0 {
		names = p.ServiceNames()
	}
	sort.Strings(names)
	var out []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("services depend on each other in a cycle: %s", strings.Join(append(path, n), " -> "))
		}
		s, ok := p.Services[n]
		if !ok {
			return fmt.Errorf("no such service: %s", n)
		}
		state[n] = 1
		deps := make([]string, 0, len(s.DependsOn))
		for d, dep := range s.DependsOn {
			if _, ok := p.Services[d]; ok || dep.Required {
				deps = append(deps, d)
			}
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		out = append(out, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ContainerName is the name of a service's container number n.
func ContainerName(p *types.Project, s types.ServiceConfig, n int) string {
	if s.ContainerName != "" {
		return s.ContainerName
	}
	return fmt.Sprintf("%s-%s-%d", p.Name, s.Name, n)
}

// Image is the image a service runs: its image, else the one its build
// makes (PROJECT-SERVICE, as docker compose names it).
func Image(p *types.Project, s types.ServiceConfig) string {
	if s.Image != "" {
		return s.Image
	}
	return p.Name + "-" + s.Name
}

// Networks are the lodge networks a service's container joins, the
// first (Compose's priority order) its default route's: nil for the
// default one ("bridge" in Compose), "none", or networks' lodge names
// (name=NAME,ip=ADDRESS where the service asks for an ipv4_address);
// aliases are its names on them (Lodge's aliases hold on each of its
// networks). A network Compose asks for that lodge cannot give is an
// error.
func Networks(p *types.Project, s types.ServiceConfig) (names, aliases []string, err error) {
	switch mode := s.NetworkMode; {
	case mode == "none":
		return []string{"none"}, nil, nil
	case mode == "bridge" || mode == "default" && len(s.Networks) == 0:
		return nil, nil, nil
	case mode != "":
		return nil, nil, fmt.Errorf("service %s: network_mode %q: lodge gives each container its own VM and network namespace: only none and bridge are offered", s.Name, mode)
	}
	addAlias := func(a string) {
		if !slices.Contains(aliases, a) {
			aliases = append(aliases, a)
		}
	}
	for _, key := range s.NetworksByPriority() {
		nw, ok := p.Networks[key]
		if !ok {
			return nil, nil, fmt.Errorf("service %s: no network %s in the project", s.Name, key)
		}
		if err := checkNetwork(key, nw); err != nil {
			return nil, nil, err
		}
		arg := nw.Name
		if sn := s.Networks[key]; sn != nil {
			if sn.Ipv6Address != "" || sn.MacAddress != "" {
				return nil, nil, fmt.Errorf("service %s: network %s: fixed IPv6 and MAC addresses are not offered", s.Name, key)
			}
			if sn.Ipv4Address != "" {
				arg = "name=" + nw.Name + ",ip=" + sn.Ipv4Address
			}
			if sn.UseServiceNameAlias == nil || *sn.UseServiceNameAlias {
				addAlias(s.Name)
			}
			for _, a := range sn.Aliases {
				addAlias(a)
			}
		} else {
			addAlias(s.Name)
		}
		names = append(names, arg)
	}
	return names, aliases, nil
}

// checkNetwork refuses a network lodge cannot make as Compose describes it.
func checkNetwork(key string, nw types.NetworkConfig) error {
	switch {
	case nw.Driver != "" && nw.Driver != "bridge":
		return fmt.Errorf("network %s: driver %q: lodge's networks are bridges", key, nw.Driver)
	case nw.EnableIPv6 != nil && *nw.EnableIPv6:
		return fmt.Errorf("network %s: IPv6 is not offered", key)
	case len(nw.Ipam.Config) > 1:
		return fmt.Errorf("network %s: one IPAM pool at most", key)
	}
	return nil
}

// Subnet is a network's subnet as the file gives it ("" to have one picked).
func Subnet(nw types.NetworkConfig) string {
	if len(nw.Ipam.Config) == 1 {
		return nw.Ipam.Config[0].Subnet
	}
	return ""
}

// Hash is what a container of the service was made from: the service's
// configuration and its image's ID; a container whose label differs is
// made again by `up`.
func Hash(s types.ServiceConfig, imageID string) string {
	s.Scale = nil
	if s.Deploy != nil {
		d := *s.Deploy
		d.Replicas = nil
		s.Deploy = &d
	}
	s.DependsOn = nil // a dependency's change is not the container's
	b, _ := json.Marshal(s)
	h := sha256.New()
	h.Write(b)
	h.Write([]byte(imageID))
	return hex.EncodeToString(h.Sum(nil))
}

// Container is one container of a service, as `up` or `run` makes it.
type Container struct {
	Name    string
	Hash    string   // Hash's, on its label
	Number  int      // its number among the service's containers
	Detach  bool     // run -d (up), else in the foreground (run)
	Oneoff  bool     // lodge compose run's
	Command []string // replaces the service's command (nil: the service's)
	// Anonymous are the anonymous volumes of the container this one
	// replaces, by the path they are mounted at: carried over where this
	// one has an anonymous volume or nothing at that path, as docker
	// compose carries them.
	Anonymous map[string]string
}

// RunArgs are `lodge run`'s arguments (after "run") for container c of
// service s. What lodge cannot honour is an error; what it ignores is in
// warnings.
func RunArgs(p *types.Project, s types.ServiceConfig, c Container) (args, warnings []string, err error) {
	if err := unsupported(s); err != nil {
		return nil, nil, err
	}
	warn := func(f string, a ...any) {
		warnings = append(warnings, fmt.Sprintf("service %s: ", s.Name)+fmt.Sprintf(f, a...))
	}
	add := func(a ...string) { args = append(args, a...) }
	if c.Detach {
		add("-d")
	}
	add("--name", c.Name, "--pull", "never")
	labels := map[string]string{
		LabelProject: p.Name, LabelService: s.Name, LabelNumber: strconv.Itoa(c.Number),
		LabelOneoff: "False", LabelConfigHash: c.Hash, LabelWorkingDir: p.WorkingDir,
		LabelFiles: strings.Join(p.ComposeFiles, ","),
	}
	if c.Oneoff {
		labels[LabelOneoff] = "True"
	}
	for k, v := range s.Labels {
		if _, ours := labels[k]; !ours {
			labels[k] = v
		}
	}
	for _, k := range sortedKeys(labels) {
		add("--label", k+"="+labels[k])
	}
	networks, aliases, err := Networks(p, s)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range networks {
		add("--network", n)
	}
	for _, a := range aliases {
		add("--network-alias", a)
	}
	if s.Hostname != "" {
		add("--hostname", s.Hostname)
	}
	for _, k := range sortedKeys(s.Environment) {
		if v := s.Environment[k]; v != nil {
			add("-e", k+"="+*v)
		}
	}
	if s.WorkingDir != "" {
		add("-w", s.WorkingDir)
	}
	if s.User != "" {
		add("-u", s.User)
	}
	// Switches and repeated flags, as the service sets them.
	for _, sw := range []struct {
		on   bool
		flag string
	}{{s.Tty, "-t"}, {s.StdinOpen, "-i"}, {s.Init != nil && *s.Init, "--init"}, {s.ReadOnly, "--read-only"}, {s.Privileged, "--privileged"}} {
		if sw.on {
			add(sw.flag)
		}
	}
	each := func(flag string, vals []string) {
		for _, v := range vals {
			add(flag, v)
		}
	}
	each("--cap-add", s.CapAdd)
	each("--cap-drop", s.CapDrop)
	each("--security-opt", s.SecurityOpt)
	if !c.Oneoff && s.Restart != "" {
		add("--restart", s.Restart)
	}
	if s.StopSignal != "" {
		add("--stop-signal", s.StopSignal)
	}
	if s.StopGracePeriod != nil {
		add("--stop-timeout", strconv.Itoa(int(time.Duration(*s.StopGracePeriod).Round(time.Second)/time.Second)))
	}
	mem, cpus := int64(s.MemLimit), float64(s.CPUS)
	if s.Deploy != nil && s.Deploy.Resources.Limits != nil {
		if l := s.Deploy.Resources.Limits; l.MemoryBytes > 0 {
			mem = int64(l.MemoryBytes)
		}
		if l := s.Deploy.Resources.Limits; l.NanoCPUs > 0 {
			cpus = float64(l.NanoCPUs)
		}
	}
	if mem > 0 {
		add("-m", strconv.FormatInt(mem, 10))
	}
	if cpus == 0 && s.CPUQuota > 0 {
		// cpu_quota over cpu_period (docker's default period: 100 ms).
		period := s.CPUPeriod
		if period <= 0 {
			period = 100000
		}
		cpus = float64(s.CPUQuota) / float64(period)
	}
	if cpus > 0 {
		add("--cpus", strconv.FormatFloat(cpus, 'f', -1, 64))
	}
	if s.PidsLimit > 0 {
		add("--pids-limit", strconv.FormatInt(s.PidsLimit, 10))
	}
	memLow := int64(s.MemReservation)
	if s.Deploy != nil && s.Deploy.Resources.Reservations != nil && s.Deploy.Resources.Reservations.MemoryBytes > 0 {
		memLow = int64(s.Deploy.Resources.Reservations.MemoryBytes)
	}
	if memLow > 0 {
		add("--memory-reservation", strconv.FormatInt(memLow, 10))
	}
	if s.CPUShares > 0 {
		add("--cpu-shares", strconv.FormatInt(s.CPUShares, 10))
	}
	if s.CPUSet != "" {
		add("--cpuset-cpus", s.CPUSet)
	}
	each("--group-add", s.GroupAdd)
	if s.ShmSize > 0 {
		add("--shm-size", strconv.FormatInt(int64(s.ShmSize), 10))
	}
	for _, k := range sortedKeys(s.StorageOpt) {
		add("--storage-opt", k+"="+s.StorageOpt[k])
	}
	for _, k := range sortedKeys(s.Ulimits) {
		u := s.Ulimits[k]
		soft, hard := u.Soft, u.Hard
		if u.Single != 0 {
			soft, hard = u.Single, u.Single
		}
		add("--ulimit", fmt.Sprintf("%s=%d:%d", k, soft, hard))
	}
	for _, k := range sortedKeys(s.Sysctls) {
		add("--sysctl", k+"="+s.Sysctls[k])
	}
	each("--tmpfs", s.Tmpfs)
	for _, h := range sortedKeys(s.ExtraHosts) {
		for _, ip := range s.ExtraHosts[h] {
			add("--add-host", h+":"+ip)
		}
	}
	each("--dns", s.DNS)
	each("--dns-search", s.DNSSearch)
	each("--dns-option", s.DNSOpts)
	each("--expose", s.Expose)
	for _, pt := range s.Ports {
		add("-p", portArg(pt))
	}
	args = append(args, healthArgs(s.HealthCheck)...)
	for _, v := range s.VolumesFrom {
		from, err := volumesFromArg(p, v)
		if err != nil {
			return nil, nil, fmt.Errorf("service %s: volumes_from %s: %w", s.Name, v, err)
		}
		add("--volumes-from", from)
	}
	vols, err := volumeArgs(p, s, c.Anonymous)
	if err != nil {
		return nil, nil, err
	}
	args = append(args, vols...)
	if s.Logging != nil && s.Logging.Driver != "" && s.Logging.Driver != "json-file" {
		warn("logging driver %s: lodge keeps a container's output in its own log (lodge logs)", s.Logging.Driver)
	}
	if s.DomainName != "" {
		warn("domainname is not set")
	}
	if s.Links != nil {
		warn("links: services find each other by name on their network; link aliases are not added")
	}
	// Keys with no meaning in a VM of the container's own, or nothing here
	// to set them with: said, not silently dropped.
	for _, k := range []struct {
		set bool
		key string
		why string
	}{
		{s.MemSwapLimit != 0, "memswap_limit", "the container's guest has no swap; mem_limit bounds its memory"},
		{s.OomKillDisable, "oom_kill_disable", "the guest's OOM killer guards the guest; mem_limit is the container's bound"},
		{s.OomScoreAdj != 0, "oom_score_adj", "not set: the container's VM holds only it and the guest's own processes"},
		{s.BlkioConfig != nil, "blkio_config", "not applied: the container's disks are files of its VM"},
		{len(s.StorageOpt) > 0, "storage_opt", "not applied: the writable layer's size is Lodge's"},
		{s.CPUCount != 0 || s.CPUPercent != 0, "cpu_count/cpu_percent", "Windows' keys; cpus bounds CPU here"},
		{len(s.Annotations) > 0, "annotations", "not applied to the container"},
	} {
		if k.set {
			warn("%s: %s", k.key, k.why)
		}
	}
	// The command: an entrypoint of more than one word runs as the first
	// with the others before the command's words, as docker joins them.
	cmd := []string(s.Command)
	if c.Command != nil {
		cmd = c.Command
	}
	if s.Entrypoint != nil {
		ep := []string(s.Entrypoint)
		if len(ep) == 0 {
			add("--entrypoint", "")
		} else {
			add("--entrypoint", ep[0])
			cmd = append(append([]string{}, ep[1:]...), cmd...)
		}
	}
	args = append(args, Image(p, s))
	return append(args, cmd...), warnings, nil
}

// healthArgs are run's --health-* flags for a healthcheck (the CMD form
// as a JSON array, which lodge runs as it is).
func healthArgs(hc *types.HealthCheckConfig) []string {
	if hc == nil {
		return nil
	}
	if hc.Disable || len(hc.Test) > 0 && hc.Test[0] == "NONE" {
		return []string{"--no-healthcheck"}
	}
	var args []string
	switch {
	case len(hc.Test) > 1 && hc.Test[0] == "CMD":
		b, _ := json.Marshal([]string(hc.Test[1:]))
		args = append(args, "--health-cmd", string(b))
	case len(hc.Test) > 1 && hc.Test[0] == "CMD-SHELL":
		args = append(args, "--health-cmd", strings.Join(hc.Test[1:], " "))
	}
	for _, d := range []struct {
		flag string
		v    *types.Duration
	}{{"--health-interval", hc.Interval}, {"--health-timeout", hc.Timeout}, {"--health-start-period", hc.StartPeriod}} {
		if d.v != nil && *d.v > 0 {
			args = append(args, d.flag, time.Duration(*d.v).String())
		}
	}
	if hc.Retries != nil && *hc.Retries > 0 {
		args = append(args, "--health-retries", strconv.FormatUint(*hc.Retries, 10))
	}
	return args
}

// unsupported refuses what the service asks and lodge cannot give.
func unsupported(s types.ServiceConfig) error {
	var keys []string
	check := func(set bool, key string) {
		if set {
			keys = append(keys, key)
		}
	}
	check(len(s.Devices) > 0, "devices")
	check(len(s.Gpus) > 0 || s.Deploy != nil && s.Deploy.Resources.Reservations != nil && len(s.Deploy.Resources.Reservations.Devices) > 0, "gpus")
	check(s.Ipc != "" && s.Ipc != "private" && s.Ipc != "shareable", "ipc")
	check(s.Pid != "", "pid")
	check(s.Uts != "", "uts")
	check(s.UserNSMode != "", "userns_mode")
	check(s.CgroupParent != "", "cgroup_parent")
	check(len(s.PreStart) > 0, "pre_start")
	check(s.Provider != nil, "provider")
	check(slices.ContainsFunc(append(slices.Clone(s.PostStart), s.PreStop...), func(h types.ServiceHook) bool { return h.Privileged }), "privileged post_start/pre_stop hooks")
	check(s.Runtime != "", "runtime")
	check(s.MacAddress != "", "mac_address")
	check(s.CPURTPeriod != 0 || s.CPURTRuntime != 0, "cpu_rt_period/cpu_rt_runtime")
	check(len(s.DeviceCgroupRules) > 0, "device_cgroup_rules")
	check(s.Cgroup == "host", "cgroup: host")
	check(s.Isolation != "" && s.Isolation != "default", "isolation")
	check(s.Platform != "" && s.Platform != "linux/amd64", "platform")
	if len(keys) > 0 {
		return fmt.Errorf("service %s: %s: not offered by lodge (each container runs in a VM of its own)", s.Name, strings.Join(keys, ", "))
	}
	return nil
}

// portArg is -p's value for a port.
func portArg(pt types.ServicePortConfig) string {
	v := strconv.FormatUint(uint64(pt.Target), 10)
	if pt.Published != "" {
		v = pt.Published + ":" + v
	}
	if pt.HostIP != "" {
		if pt.Published == "" {
			v = ":" + v
		}
		v = pt.HostIP + ":" + v
	}
	if pt.Protocol != "" && pt.Protocol != "tcp" {
		v += "/" + pt.Protocol
	}
	return v
}

// volumeArgs are -v and --tmpfs for the service's volumes, secrets and
// configs (files bound read-only where Compose puts them).
func volumeArgs(p *types.Project, s types.ServiceConfig, anonymous map[string]string) ([]string, error) {
	var args []string
	covered := map[string]bool{}
	for _, v := range s.Volumes {
		covered[path.Clean(v.Target)] = true
		ro := ""
		if v.ReadOnly {
			ro = ":ro"
		}
		switch v.Type {
		case types.VolumeTypeBind:
			if v.Bind != nil && !v.Bind.CreateHostPath {
				// create_host_path: false: a missing source is an error,
				// which --mount gives (-v makes the directory).
				args = append(args, "--mount", mountValue("type=bind", "source="+v.Source, "target="+v.Target, "readonly="+strconv.FormatBool(v.ReadOnly)))
				continue
			}
			args = append(args, "-v", v.Source+":"+v.Target+ro)
		case types.VolumeTypeVolume:
			if v.Source == "" {
				if prev := anonymous[path.Clean(v.Target)]; prev != "" {
					args = append(args, "-v", prev+":"+v.Target)
					continue
				}
				args = append(args, "-v", v.Target)
				continue
			}
			vol, ok := p.Volumes[v.Source]
			if !ok {
				return nil, fmt.Errorf("service %s: no volume %s in the project", s.Name, v.Source)
			}
			if vol.Driver != "" && vol.Driver != "local" {
				return nil, fmt.Errorf("volume %s: driver %q: lodge's volumes are local", v.Source, vol.Driver)
			}
			if v.Volume != nil && (v.Volume.NoCopy || v.Volume.Subpath != "") {
				fields := []string{"type=volume", "source=" + vol.Name, "target=" + v.Target, "readonly=" + strconv.FormatBool(v.ReadOnly),
					"volume-nocopy=" + strconv.FormatBool(v.Volume.NoCopy)}
				if v.Volume.Subpath != "" {
					fields = append(fields, "volume-subpath="+v.Volume.Subpath)
				}
				args = append(args, "--mount", mountValue(fields...))
				continue
			}
			args = append(args, "-v", vol.Name+":"+v.Target+ro)
		case types.VolumeTypeTmpfs:
			t := v.Target
			if v.Tmpfs != nil && v.Tmpfs.Size > 0 {
				t += ":size=" + strconv.FormatInt(int64(v.Tmpfs.Size), 10)
			}
			args = append(args, "--tmpfs", t)
		default:
			return nil, fmt.Errorf("service %s: a volume of type %s is not offered", s.Name, v.Type)
		}
	}
	files := func(kind, dir string, refs []types.FileReferenceConfig, defs map[string]types.FileObjectConfig) error {
		for _, r := range refs {
			d, ok := defs[r.Source]
			if !ok {
				return fmt.Errorf("service %s: no %s %s in the project", s.Name, kind, r.Source)
			}
			if d.File == "" {
				return fmt.Errorf("service %s: %s %s: only file-based ones are offered", s.Name, kind, r.Source)
			}
			target := r.Target
			switch {
			case target == "":
				target = dir + r.Source
			case !filepath.IsAbs(target):
				target = dir + target
			}
			args = append(args, "-v", d.File+":"+target+":ro")
		}
		return nil
	}
	var secrets, configs []types.FileReferenceConfig
	for _, r := range s.Secrets {
		secrets = append(secrets, types.FileReferenceConfig(r))
	}
	for _, r := range s.Configs {
		configs = append(configs, types.FileReferenceConfig(r))
	}
	sdefs, cdefs := map[string]types.FileObjectConfig{}, map[string]types.FileObjectConfig{}
	for k, v := range p.Secrets {
		sdefs[k] = types.FileObjectConfig(v)
	}
	for k, v := range p.Configs {
		cdefs[k] = types.FileObjectConfig(v)
	}
	if err := files("secret", "/run/secrets/", secrets, sdefs); err != nil {
		return nil, err
	}
	if err := files("config", "/", configs, cdefs); err != nil {
		return nil, err
	}
	// The replaced container's other anonymous volumes (the image's
	// VOLUMEs) where the service mounts nothing else.
	for _, dst := range sortedKeys(anonymous) {
		if !covered[dst] {
			args = append(args, "-v", anonymous[dst]+":"+dst)
		}
	}
	return args, nil
}

// volumesFromArg is --volumes-from's value for a volumes_from entry:
// container:NAME[:MODE] names a container, SERVICE[:MODE] the service's
// first container (which compose-go makes a dependency, started first).
func volumesFromArg(p *types.Project, v string) (string, error) {
	if name, ok := strings.CutPrefix(v, types.ContainerPrefix); ok {
		return name, nil
	}
	svc, mode, hasMode := strings.Cut(v, ":")
	other, ok := p.Services[svc]
	if !ok {
		return "", fmt.Errorf("no service %s in the project", svc)
	}
	out := ContainerName(p, other, 1)
	if hasMode {
		out += ":" + mode
	}
	return out, nil
}

// HookArgs are `lodge exec`'s arguments (after "exec") for a post_start
// or pre_stop hook, run in container name as docker compose runs it.
func HookArgs(h types.ServiceHook, name string) ([]string, error) {
	if len(h.Command) == 0 {
		return nil, errors.New("a hook without a command")
	}
	var args []string
	if h.User != "" {
		args = append(args, "-u", h.User)
	}
	if h.WorkingDir != "" {
		args = append(args, "-w", h.WorkingDir)
	}
	for _, k := range sortedKeys(h.Environment) {
		if v := h.Environment[k]; v != nil {
			args = append(args, "-e", k+"="+*v)
		} else {
			args = append(args, "-e", k)
		}
	}
	return append(append(args, name), h.Command...), nil
}

// mountValue is a --mount value of fields (KEY=VALUE), each quoted where
// a comma or a quote in it would split it, as docker reads the value.
func mountValue(fields ...string) string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	w.Write(fields)
	w.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
