package cli

// The container's OCI spec from the image's config and `lodge run`'s
// command line, as docker makes it.

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/oci"
)

// runSpec makes the container's OCI spec from the image's config and the
// command line, as docker does.
func runSpec(im *image.Image, lays []string, o runOpts, args []string, id string) (_ *specs.Spec, m mounted, err error) {
	c := im.Config.Config
	var anon []string // removed again on error
	defer func() {
		if err != nil {
			removeAnonymous(anon, "")
		}
	}()
	spec := oci.DefaultSpec()
	p := spec.Process
	p.Terminal = o.tty
	p.NoNewPrivileges = false
	p.Capabilities = &specs.LinuxCapabilities{Bounding: oci.DockerCaps, Effective: oci.DockerCaps, Permitted: oci.DockerCaps}
	p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1048576, Soft: 1048576}}
	if err := applySpecOpts(spec, o.specOpts); err != nil {
		return nil, m, err
	}
	secOpts := o.securityOpts
	if o.privileged && !slices.ContainsFunc(secOpts, func(s string) bool { return strings.HasPrefix(s, "seccomp") }) {
		secOpts = append([]string{"seccomp=unconfined"}, secOpts...) // docker's --privileged
	}
	if err := applySecurityOpts(spec, secOpts); err != nil {
		return nil, m, err
	}
	spec.Root = &specs.Root{Path: "rootfs", Readonly: o.readOnly}
	spec.Hostname = id[:12]
	if o.hostname != "" {
		spec.Hostname = o.hostname
	}
	entry, cmdArgs := entryAndCmd(c, o, args)
	p.Args = append(append([]string{}, entry...), cmdArgs...)
	if len(p.Args) == 0 {
		return nil, m, fmt.Errorf("no command: the image %s has none, give one after its name", displayName(im.Name))
	}
	if o.init {
		// As docker's --init: the host's static tini, bind-mounted read-only
		// where docker puts it.
		if _, err := os.Stat(initBinary); err != nil {
			return nil, m, fmt.Errorf("--init runs %s, which is missing (apt-get install tini): %w", initBinary, err)
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: initPath, Type: "bind", Source: initBinary,
			Options: []string{"rbind", "ro", "rprivate"}})
		p.Args = append([]string{initPath, "--"}, p.Args...)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	env = mergeEnv(env, c.Env)
	env = mergeEnv(env, []string{"HOSTNAME=" + spec.Hostname})
	if o.tty {
		env = mergeEnv(env, []string{"TERM=xterm"})
	}
	for _, f := range o.envFiles {
		vs, err := readEnvFile(f)
		if err != nil {
			return nil, m, err
		}
		env = mergeEnv(env, vs)
	}
	for _, e := range o.env {
		if !strings.Contains(e, "=") {
			v, ok := os.LookupEnv(e)
			if !ok {
				continue
			}
			e += "=" + v
		}
		env = mergeEnv(env, []string{e})
	}
	p.Env = env
	p.Cwd = "/"
	if c.WorkingDir != "" {
		p.Cwd = c.WorkingDir
	}
	if o.workdir != "" {
		p.Cwd = o.workdir
	}
	if !path.IsAbs(p.Cwd) {
		return nil, m, fmt.Errorf("working directory %q must be absolute", p.Cwd)
	}
	user := c.User
	if o.user != "" {
		user = o.user
	}
	if user != "" {
		u, err := resolveUser(user, lays)
		if err != nil {
			return nil, m, err
		}
		p.User = u
	}
	for _, g := range o.groupAdd {
		gid, err := resolveGroup(g, lays)
		if err != nil {
			return nil, m, fmt.Errorf("--group-add %s: %w", g, err)
		}
		if !slices.Contains(p.User.AdditionalGids, gid) {
			p.User.AdditionalGids = append(p.User.AdditionalGids, gid)
		}
	}
	var imageVolumes []string
	for d := range c.Volumes {
		imageVolumes = append(imageVolumes, d)
	}
	sort.Strings(imageVolumes)
	m, err = ctrMounts(spec, imageVolumes, lays, o, o.warn)
	anon = append(anon, m.anon...)
	if err != nil {
		return nil, m, err
	}
	res := spec.Linux.Resources
	if o.memory != "" {
		n, err := parseBytes(o.memory)
		if err != nil {
			return nil, m, fmt.Errorf("--memory %q: %w", o.memory, err)
		}
		res.Memory = &specs.LinuxMemory{Limit: &n}
	}
	if o.memoryReservation != "" {
		n, err := parseBytes(o.memoryReservation)
		if err != nil {
			return nil, m, fmt.Errorf("--memory-reservation %q: %w", o.memoryReservation, err)
		}
		if res.Memory == nil {
			res.Memory = &specs.LinuxMemory{}
		}
		res.Memory.Reservation = &n
	}
	if o.cpus > 0 {
		period := uint64(100000)
		quota := int64(o.cpus * float64(period))
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if o.cpuShares != 0 || o.cpusetCpus != "" {
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		if o.cpuShares != 0 {
			if o.cpuShares < 2 || o.cpuShares > 262144 {
				return nil, m, fmt.Errorf("--cpu-shares %d: want 2 to 262144", o.cpuShares)
			}
			shares := uint64(o.cpuShares)
			res.CPU.Shares = &shares
		}
		if o.cpusetCpus != "" {
			if !cpuList.MatchString(o.cpusetCpus) {
				return nil, m, fmt.Errorf("--cpuset-cpus %q: want a list such as 0-1 or 0,2 (the CPUs of the container's VM)", o.cpusetCpus)
			}
			res.CPU.Cpus = o.cpusetCpus
		}
	}
	// docker's /dev nodes and default device rules (--privileged: every
	// device of its guest).
	spec.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: o.privileged, Access: "rwm"}}
	spec.Annotations = map[string]string{"io.lodge.image": im.Name}
	return spec, m, nil
}

// cpuList is a cpuset list: 0-3,5.
var cpuList = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

// entryAndCmd are the container's entrypoint and command: the image's,
// unless the command line gives them.
func entryAndCmd(c v1.Config, o runOpts, args []string) (entry, cmd []string) {
	entry, cmd = c.Entrypoint, c.Cmd
	if o.entrypoint != nil {
		entry, cmd = nil, nil
		if *o.entrypoint != "" {
			entry = []string{*o.entrypoint}
		}
	}
	if len(args) > 0 {
		cmd = args
	}
	return entry, cmd
}

// ctrConfig is the container's config as docker keeps it (what lodge
// commit gives the image it makes): the image's, with what the command
// line changed. Its environment is the process's but for what the
// runtime adds (HOSTNAME, and TERM for a terminal).
func ctrConfig(im *image.Image, o runOpts, args []string, spec *specs.Spec, labels map[string]string) *v1.Config {
	c := im.Config.Config.DeepCopy()
	c.Entrypoint, c.Cmd = entryAndCmd(*c, o, args)
	c.Env = nil
	for _, e := range spec.Process.Env {
		k, _, _ := strings.Cut(e, "=")
		if k == "HOSTNAME" || k == "TERM" && o.tty && !slices.ContainsFunc(im.Config.Config.Env, func(s string) bool { return strings.HasPrefix(s, "TERM=") }) {
			continue
		}
		c.Env = append(c.Env, e)
	}
	c.WorkingDir = spec.Process.Cwd
	if c.WorkingDir == "/" && im.Config.Config.WorkingDir == "" {
		c.WorkingDir = ""
	}
	if o.user != "" {
		c.User = o.user
	}
	for _, e := range o.expose {
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		if !strings.Contains(e, "/") {
			e += "/tcp"
		}
		c.ExposedPorts[e] = struct{}{}
	}
	for k, v := range labels {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels[k] = v
	}
	if o.stopSignal != "" {
		c.StopSignal = o.stopSignal
	}
	return c
}

func mergeEnv(env, add []string) []string {
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, e := range env {
			if ek, _, _ := strings.Cut(e, "="); ek == k {
				env[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			env = append(env, kv)
		}
	}
	return env
}

func readEnvFile(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !strings.Contains(l, "=") {
			v, ok := os.LookupEnv(l)
			if !ok {
				continue
			}
			l += "=" + v
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// Bounds of a writable layer's size (--storage-opt size=): room for an
// ext4 with an overlay's upper and work directories; ext4's largest with
// 4 KiB blocks and no 64bit feature.
const minWritableBytes, maxWritableBytes = 64 << 20, 16 << 40

// parseStorageOpts reads --storage-opt: size=SIZE alone, docker's one
// option for a container's own layer. It returns the size (0: none given)
// and the options as inspect shows them.
func parseStorageOpts(in []string) (int64, map[string]string, error) {
	var size int64
	opts := map[string]string{}
	for _, kv := range in {
		k, v, _ := strings.Cut(kv, "=")
		if k != "size" {
			return 0, nil, fmt.Errorf("--storage-opt %q: lodge knows size=SIZE alone (its writable layer's size)", kv)
		}
		n, err := parseBytes(v)
		if err != nil || n < minWritableBytes || n > maxWritableBytes {
			return 0, nil, fmt.Errorf("--storage-opt %q: want a size from 64m to 16t", kv)
		}
		size, opts[k] = n, v
	}
	if len(opts) == 0 {
		opts = nil
	}
	return size, opts, nil
}

func parseBytes(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for suf, m := range map[string]int64{"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "b": 1} {
		if strings.HasSuffix(s, suf) {
			s, mult = strings.TrimSuffix(s, suf), m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, errors.New("want a positive size such as 512m or 1g")
	}
	return n * mult, nil
}
