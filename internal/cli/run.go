package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/runtimecli"
	"github.com/lodgeruntime/lodge/internal/state"
)

// initBinary is the init `run --init` puts at initPath in the container:
var initBinary = "/usr/bin/tini-static"

const initPath = "/sbin/docker-init"

// runtimeState is lodge-runtime's state root for `lodge`'s containers.
const runtimeState = "/run/lodge/lodge"

type runOpts struct {
	rm, interactive, tty, readOnly bool
	init                           bool // --init: tini as the container's PID 1
	name, workdir, user, hostname  string
	entrypoint                     *string
	env, envFiles, volumes         []string
	mounts                         []string  // --mount, docker's KEY=VALUE form (mounts.go)
	volumesFrom                    []string  // --volumes-from CONTAINER[:ro|:rw]
	warn                           io.Writer // where what was not done as asked is said (stderr)
	securityOpts                   []string  // docker's --security-opt
	memory, memoryReservation      string
	cpus                           float64
	cpuShares                      int64
	cpusetCpus                     string
	groupAdd                       []string // --group-add: more groups
	cidFile                        string   // --cidfile: where the ID is written
	labelFiles                     []string // --label-file
	networks                       []string // --network, once or more
	ip                             string   // --ip: the first network's address
	allowOut, denyOut              []string // --allow-out, --deny-out: what it may open connections to
	egressProxy                    int      // --egress-proxy: the port its 80 and 443 go to
	egressDNS                      int      // --egress-dns: the port its DNS goes to
	pull                           string
	restart                        string        // --restart: the restart policy
	timeout                        time.Duration // --timeout: each run stopped this long after it starts
	onTimeout                      string        // --on-timeout: stop or pause
	publish, expose                []string
	publishAll                     bool // -P: every exposed port to a host port of the kernel's choosing
	createOnly                     bool // lodge create: made, not started
	detach                         bool
	health                         healthOpts // --health-* (health.go)
	specOpts                                  // privileges, limits, names, stop (runflags.go)
}

func addRunCommand(root *cobra.Command, a *app) {
	var o runOpts
	var entrypoint string
	run := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "run a command in a new container, in a microVM of its own",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("entrypoint") {
				o.entrypoint = &entrypoint
			}
			return a.run(cmd, o, args[0], args[1:])
		},
	}
	create := &cobra.Command{
		Use:   "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "create a container (its VM boots) without starting its command; `lodge start` starts it",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("entrypoint") {
				o.entrypoint = &entrypoint
			}
			o.createOnly = true
			return a.run(cmd, o, args[0], args[1:])
		},
	}
	var startAttach, startInteractive bool
	start := &cobra.Command{
		Use:   "start [-a [-i]] CONTAINER...",
		Short: "start containers: created ones, or ended ones again (with what they wrote)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if startAttach || startInteractive {
				if len(args) != 1 {
					return errors.New("start -a or -i: one container")
				}
				r, err := findCtr(args[0])
				if err != nil {
					return err
				}
				// One that has ended is made again first, and started
				// once attached.
				if err := a.startCtr(cmd.Context(), r, true); err != nil {
					return err
				}
				if r, err = loadCtr(r.ID); err != nil {
					return err
				}
				return a.attach(cmd, r, attachOpts{noStdin: !startInteractive, sigProxy: true}, true)
			}
			return eachCtr(cmd, args, func(r *ctrRecord) error { return a.startCtr(cmd.Context(), r, false) })
		},
	}
	start.Flags().BoolVarP(&startAttach, "attach", "a", false, "attach this terminal to the container's output, and return its exit code")
	start.Flags().BoolVarP(&startInteractive, "interactive", "i", false, "attach this terminal's input too (with -a)")
	root.AddCommand(create, start)
	f := run.Flags()
	f.SetInterspersed(false) // what follows IMAGE is the container's command
	f.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container's ID")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open")
	f.BoolVarP(&o.tty, "tty", "t", false, "allocate a terminal")
	f.BoolVar(&o.readOnly, "read-only", false, "read-only root filesystem")
	f.BoolVar(&o.init, "init", false, "run an init (tini) as PID 1 that forwards signals and reaps zombies")
	f.StringVar(&o.name, "name", "", "container name")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass the host's)")
	f.StringArrayVar(&o.envFiles, "env-file", nil, "read environment variables from a file")
	addHealthFlags(f, &o.health)
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "a host directory or file (made if missing) or a volume: HOST:CONTAINER[:ro][,nocopy], VOLUME:CONTAINER[:OPTS], or /CONTAINER (an anonymous volume); an empty volume takes the image's files there unless nocopy")
	f.StringArrayVar(&o.volumesFrom, "volumes-from", nil, "the volumes and binds of another container, at the same paths: CONTAINER[:ro|:rw]")
	f.StringArrayVar(&o.mounts, "mount", nil, "a mount as docker's --mount: type=bind|volume|tmpfs,source=..,target=..[,readonly][,volume-nocopy][,volume-subpath=DIR][,tmpfs-size=..][,tmpfs-mode=1770]")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory in the container")
	f.StringVarP(&o.user, "user", "u", "", "user (name|uid[:group|gid])")
	f.StringVar(&entrypoint, "entrypoint", "", "override the image's entrypoint")
	f.StringVarP(&o.memory, "memory", "m", "", "memory limit (e.g. 256m, 1g)")
	f.Float64Var(&o.cpus, "cpus", 0, "CPUs (e.g. 1.5)")
	f.StringVar(&o.memoryReservation, "memory-reservation", "", "memory the container is squeezed back to first when its VM runs short (e.g. 128m)")
	f.Int64Var(&o.cpuShares, "cpu-shares", 0, "CPU shares, a relative weight (2 to 262144)")
	f.StringVar(&o.cpusetCpus, "cpuset-cpus", "", "the CPUs of its VM it may run on (0-1, 0,2)")
	f.StringArrayVar(&o.groupAdd, "group-add", nil, "one more group of the container's process (a name from the image's /etc/group, or a number)")
	f.StringVar(&o.cidFile, "cidfile", "", "write the container's ID to this file (which must not exist)")
	f.StringArrayVar(&o.labelFiles, "label-file", nil, "read labels (KEY=VALUE lines) from a file")
	f.StringVar(&o.hostname, "hostname", "", "container host name")
	f.StringArrayVar(&o.networks, "network", nil, "network: bridge (the default, lodge0), none, or one made with lodge network create, or name=NET,ip=ADDRESS; again for more networks (eth1, ...)")
	f.StringVar(&o.ip, "ip", "", "the container's IPv4 address on its (first) network, kept by every start")
	f.StringArrayVar(&o.denyOut, "deny-out", nil, "a destination (IPv4 address or CIDR; 0.0.0.0/0: all) the container may not open connections to, on any network or the host; again for more")
	f.StringArrayVar(&o.allowOut, "allow-out", nil, "a destination it may open connections to whatever --deny-out says (IPv4 address or CIDR); again for more")
	f.IntVar(&o.egressDNS, "egress-dns", 0, "send its DNS (UDP and TCP port 53, to any server) to this port of its gateway (the host), a resolver that may let it reach the addresses of the names it allows (the sandbox service's: docs/sandbox-service.md)")
	f.IntVar(&o.egressProxy, "egress-proxy", 0, "send its TCP connections to ports 80 and 443 to this port of its gateway (the host), a proxy that decides by the name asked (the sandbox service's), and let it reach its resolvers")
	f.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port: [[IP:][HOSTPORT]:]CONTAINERPORT[/tcp|udp] (no HOSTPORT: a free one)")
	f.BoolVarP(&o.publishAll, "publish-all", "P", false, "publish every exposed port (the image's and --expose's) to a free host port")
	f.StringArrayVar(&o.expose, "expose", nil, "expose a port, PORT[/tcp|udp], for -P")
	f.StringVar(&o.pull, "pull", "missing", "pull the image: missing, always or never")
	f.StringVar(&o.restart, "restart", "no", "restart policy: no, always, unless-stopped or on-failure[:MAX-RETRIES]")
	f.DurationVar(&o.timeout, "timeout", 0, "stop the container (its stop signal, then SIGKILL) this long after it starts, e.g. 10m; lodge update --timeout moves it")
	f.StringVar(&o.onTimeout, "on-timeout", "stop", "what its deadline does: stop it, or pause it (its processes frozen, its memory kept; a paused container's deadline stops it)")
	addSpecFlags(f, &o.specOpts)
	f.StringArrayVar(&o.securityOpts, "security-opt", nil, "security options: "+securityOptsHelp+
		" (docker's default seccomp profile applies unless seccomp= says otherwise)")
	create.Flags().AddFlagSet(f)
	create.Flags().SetInterspersed(false)
	root.AddCommand(run)
}

// lodgeError is Lodge's own failure of a run (exit 125).
func lodgeError(err error) error { return exitError{code: ExitLodge, err: err} }

func (a *app) run(cmd *cobra.Command, o runOpts, imageName string, args []string) error {
	o.warn = cmd.ErrOrStderr()
	ctx := cmd.Context()
	var ports []portMap
	for _, p := range o.publish {
		pm, err := parsePort(p)
		if err != nil {
			return lodgeError(err)
		}
		ports = append(ports, pm)
	}
	for _, e := range o.expose {
		if _, err := parseExposed(e); err != nil {
			return lodgeError(fmt.Errorf("--expose: %w", err))
		}
	}
	policy, err := parseRestart(o.restart)
	if err != nil {
		return lodgeError(err)
	}
	if o.timeout < 0 {
		return lodgeError(fmt.Errorf("--timeout %v: want a positive duration", o.timeout))
	}
	writableBytes, storageOpt, err := parseStorageOpts(o.storageOpts)
	if err != nil {
		return lodgeError(err)
	}
	switch o.onTimeout {
	case "stop":
		o.onTimeout = ""
	case "", "pause":
	default:
		return lodgeError(fmt.Errorf("--on-timeout %s: want stop or pause", o.onTimeout))
	}
	if o.rm && policy.Name != "no" {
		return lodgeError(fmt.Errorf("--restart %s and --rm: a container removed when it ends cannot be started again", o.restart))
	}
	networks, err := runNetworks(o.networks, o.ip)
	if err != nil {
		return lodgeError(err)
	}
	network := networks[0].Name
	eg, err := parseEgress(o.allowOut, o.denyOut)
	if err != nil {
		return lodgeError(err)
	}
	if o.egressProxy != 0 {
		if o.egressProxy < 1 || o.egressProxy > 65535 {
			return lodgeError(fmt.Errorf("--egress-proxy %d: want a port", o.egressProxy))
		}
		eg = orEmpty(eg)
		eg.Proxy = o.egressProxy
	}
	if o.egressDNS != 0 {
		if o.egressDNS < 1 || o.egressDNS > 65535 {
			return lodgeError(fmt.Errorf("--egress-dns %d: want a port", o.egressDNS))
		}
		eg = orEmpty(eg)
		eg.DNS = o.egressDNS
	}
	if eg != nil && network == "none" {
		return lodgeError(errors.New("--allow-out/--deny-out/--egress-proxy/--egress-dns: the container has no network (--network none)"))
	}
	switch {
	case network == "none" && (len(ports) > 0 || o.publishAll || len(o.aliases) > 0):
		return lodgeError(errors.New("-p, -P and --network-alias need a network: not with --network none"))
	case len(o.aliases) > 0 && !slices.ContainsFunc(networks, func(n netReq) bool { return n.Name != bridgeNetwork }):
		return lodgeError(errors.New("--network-alias: names are for networks made with lodge network create, not the default one (as docker's)"))
	}
	for _, sc := range o.sysctls {
		if network != "none" && strings.HasPrefix(sc, "net.") {
			// The VM takes over the container's interface, and the
			// container uses its guest's own network namespace, in which
			// the guest's runtime sets no net.* sysctl.
			return lodgeError(fmt.Errorf("--sysctl %s: a container on a network uses its VM's network namespace, where net.* sysctls are not set; with --network none it has one of its own", sc))
		}
	}
	st := a.images()
	var im *image.Image
	switch o.pull {
	case "always":
		im, err = a.pull(cmd, imageName, "")
	case "missing", "never":
		im, err = st.Find(normalise(imageName))
		if errors.Is(err, image.ErrNotFound) && o.pull == "missing" {
			im, err = a.pull(cmd, imageName, "")
		}
	default:
		err = fmt.Errorf("--pull %q: want missing, always or never", o.pull)
	}
	if err != nil {
		return lodgeError(err)
	}
	if o.publishAll {
		exposed := append([]string(nil), o.expose...)
		for e := range im.Config.Config.ExposedPorts {
			exposed = append(exposed, e)
		}
		if ports, err = publishAll(ports, exposed); err != nil {
			return lodgeError(fmt.Errorf("-P: %w", err))
		}
	}
	lays, err := st.RootLayers(ctx, im)
	if err != nil {
		return lodgeError(err)
	}
	// What can be refused is, before runSpec makes anonymous volumes.
	name, err := uniqueName(o.name)
	if err != nil {
		return lodgeError(err)
	}
	fileLabels, err := readLabelFiles(o.labelFiles)
	if err != nil {
		return lodgeError(err)
	}
	labels, err := labelMap(append(fileLabels, o.labels...))
	if err != nil {
		return lodgeError(err)
	}
	if o.cidFile != "" {
		if _, err := os.Stat(o.cidFile); err == nil {
			return lodgeError(fmt.Errorf("--cidfile %s exists: another container's? remove it first", o.cidFile))
		}
	}
	netFiles, err := o.netFiles()
	if err != nil {
		return lodgeError(err)
	}
	if eg != nil && eg.Proxy > 0 {
		eg.Resolvers = nameservers(resolvConf(netFiles))
	}
	id := newID()
	spec, mnt, err := runSpec(im, lays, o, args, id)
	if err != nil {
		return lodgeError(err)
	}
	stopSignal := im.Config.Config.StopSignal
	if o.stopSignal != "" {
		stopSignal = o.stopSignal
	}
	var stopTimeout *int
	if o.stopTimeout >= 0 {
		stopTimeout = &o.stopTimeout
	}
	rec := &ctrRecord{ID: id, Name: name, Image: im.Name, ImageID: im.ConfigDigest.Hex, Command: spec.Process.Args,
		Created: time.Now().UTC(), Detached: o.detach || o.createOnly, Interactive: o.interactive, Tty: o.tty, AutoRemove: o.rm, StopSignal: stopSignal, Volumes: mnt.volumes, Mounts: mnt.points,
		RestartPolicy: &policy, Labels: labels, NetFiles: netFiles, StopTimeout: stopTimeout, Timeout: o.timeout, OnTimeout: o.onTimeout, StorageOpt: storageOpt,
		Config: ctrConfig(im, o, args, spec, labels)}
	if err := o.health.apply(rec.Config); err != nil {
		return lodgeError(err)
	}
	if !o.createOnly {
		rec.StartedAt = rec.Created
	}
	if err := os.MkdirAll(ctrDir(id), 0o700); err != nil {
		return lodgeError(err)
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(ctrDir(id))
			removeAnonymous(mnt.anon, id)
		}
	}()
	// This command is the container's monitor until it hands the lock to
	// the log helper (-d) or the container ends.
	monitor, err := takeMonitor(ctx, rec, 0)
	if err != nil {
		return lodgeError(err)
	}
	defer monitor.Close()
	if err := rec.save(); err != nil {
		return lodgeError(err)
	}
	rec.emit("create")
	defer func() {
		if !keep {
			rec.emit("destroy")
		}
	}()
	if o.cidFile != "" {
		if err := os.WriteFile(o.cidFile, []byte(id), 0o644); err != nil {
			return lodgeError(fmt.Errorf("--cidfile: %w", err))
		}
		defer func() {
			if !keep {
				os.Remove(o.cidFile)
			}
		}()
	}
	if network != "none" {
		// One container at a time checks the published ports and records
		// its own.
		if err := os.MkdirAll(runtimeState, 0o700); err != nil {
			return lodgeError(err)
		}
		unlock, err := filelock.Lock(ctx, filepath.Join(runtimeState, "ports.lock"), true)
		if err != nil {
			return lodgeError(err)
		}
		nw, err := joinBridge(ctx, networks, id, ports, eg)
		if err != nil {
			unlock()
			return lodgeError(err)
		}
		rec.Network = nw
		defer func() {
			if !keep && rec.Network != nil {
				leaveBridge(context.WithoutCancel(ctx), id, rec.Network)
			}
		}()
		err = rec.save()
		unlock()
		if err != nil {
			return lodgeError(err)
		}
	}
	if err := addNetworkToSpec(spec, ctrDir(id), rec.Network, rec.NetFiles); err != nil {
		return lodgeError(err)
	}
	// It and the others on its networks learn each other's names.
	for _, n := range rec.Network.names() {
		if err := refreshHosts(ctx, n); err != nil {
			a.log.Warn("names on the network", "network", n, "err", err)
		}
	}
	// A container removed when it ends is never started again: its
	// writable layer need not outlive it (nor be flushed as its VM ends).
	if err := writeBundle(bundleDir(id), spec, layers.BundleLayers{Images: lays, KeepWritable: !o.rm, WritableBytes: writableBytes}); err != nil {
		return lodgeError(err)
	}
	if o.detach || o.createOnly {
		if err := a.runDetached(ctx, rec, o, monitor); err != nil {
			return lodgeError(err)
		}
		keep = true
		fmt.Fprintln(cmd.OutOrStdout(), id)
		return nil
	}
	if !o.interactive {
		restore, err := swapStdio(&os.Stdin, os.DevNull, os.O_RDONLY)
		if err != nil {
			return lodgeError(err)
		}
		defer restore()
	}
	watchCtx, endWatch := context.WithCancel(ctx)
	go a.watchDeadline(watchCtx, id)
	go a.watchHealth(watchCtx, id)
	rec.emit("start")
	code, err := runtimecli.Run(ctx, a.log, runtimeState, filepath.Join(ctrDir(id), "runtime.log"), bundleDir(id), id, false, "")
	endWatch()
	if err == nil {
		rec.emit("die", "exitCode", strconv.Itoa(code))
	}
	if lerr := leaveBridge(context.WithoutCancel(ctx), id, rec.Network); lerr != nil {
		a.log.Warn("leave the bridge network", "container", name, "err", lerr)
	}
	rec.Network = nil // left: the deferred cleanup has nothing to undo
	if err != nil {
		return exitError{code: runExitCode(err), err: err}
	}
	if !o.rm {
		keep = true
		updateCtr(ctx, id, func(c *ctrRecord) { c.ExitCode, c.FinishedAt = &code, time.Now().UTC() })
		// A policy's restart goes on in the background, as docker's.
		a.restartOnPolicy(context.WithoutCancel(ctx), id, monitor)
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// runNetworks reads --network's values and --ip: none alone, or networks
// that exist, each once (bridge or none: the default network), each a
// name or docker's name=NET,ip=ADDRESS; --ip is the first's address.
func runNetworks(vals []string, ip string) ([]netReq, error) {
	if len(vals) == 0 {
		vals = []string{bridgeNetwork}
	}
	var out []netReq
	for _, v := range vals {
		r, err := parseNetworkFlag(v)
		if err != nil {
			return nil, err
		}
		switch r.Name {
		case "none":
			if len(vals) > 1 || ip != "" || r.IP != "" {
				return nil, errors.New("--network none: not with other networks or an address")
			}
			return []netReq{r}, nil
		case "bridge", "", bridgeNetwork:
			r.Name = bridgeNetwork
		default:
			if _, err := os.Stat(networkPath(r.Name)); err != nil || !validName(r.Name) {
				return nil, fmt.Errorf("--network %s: no such network (lodge network ls)", r.Name)
			}
		}
		if slices.ContainsFunc(out, func(o netReq) bool { return o.Name == r.Name }) {
			return nil, fmt.Errorf("--network %s: given twice", r.Name)
		}
		out = append(out, r)
	}
	if ip != "" {
		if out[0].IP != "" && out[0].IP != ip {
			return nil, fmt.Errorf("--ip %s: the network %s has an address already (%s)", ip, out[0].Name, out[0].IP)
		}
		out[0].IP = ip
	}
	for _, r := range out {
		if r.IP != "" && net.ParseIP(r.IP).To4() == nil {
			return nil, fmt.Errorf("--network %s: address %q: want an IPv4 address", r.Name, r.IP)
		}
	}
	return out, nil
}

// parseNetworkFlag reads one --network value: NAME, or docker's
// comma-separated name=NAME,ip=ADDRESS.
func parseNetworkFlag(v string) (netReq, error) {
	if !strings.Contains(v, "=") {
		return netReq{Name: v}, nil
	}
	var r netReq
	for _, f := range strings.Split(v, ",") {
		key, val, _ := strings.Cut(f, "=")
		switch key {
		case "name":
			r.Name = val
		case "ip":
			r.IP = val
		default:
			return r, fmt.Errorf("--network %s: key %q is not offered (name, ip; aliases: --network-alias)", v, key)
		}
	}
	if r.Name == "" {
		return r, fmt.Errorf("--network %s: no name=", v)
	}
	return r, nil
}

// addNetworkToSpec puts the container in its network namespace (none: a
// namespace of its own in the guest, loopback only) and gives it docker's
// /etc/hosts, /etc/resolv.conf and /etc/hostname.
func addNetworkToSpec(spec *specs.Spec, dir string, nw *ctrNetwork, conf *netFilesConf) error {
	ip := ""
	if nw != nil {
		ip = nw.IP
		for i, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				spec.Linux.Namespaces[i].Path = nw.NetNS
			}
		}
	}
	files, err := networkFiles(dir, spec.Hostname, ip, conf)
	if err != nil {
		return err
	}
	for _, dst := range []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: files[dst], Options: []string{"rbind", "rprivate"}})
	}
	return nil
}

// swapStdio points *f at path for the caller's next child process (the
// supervisor inherits the process's stdio); restore undoes it.
func swapStdio(f **os.File, path string, flag int) (restore func(), err error) {
	nf, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	saved := *f
	*f = nf
	return func() { *f = saved; nf.Close() }, nil
}

// runDetached starts the container with its output going to its logger
// (this executable, __logger), which outlives this command.
func (a *app) runDetached(ctx context.Context, rec *ctrRecord, o runOpts, monitor *os.File) error {
	// Every descriptor this command opens is closed when it returns (the
	// helper has its own copies by then).
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	files = append(files, devnull)
	outR, outW, err := pipe()
	if err != nil {
		return err
	}
	errR, errW, err := pipe()
	if err != nil {
		return err
	}
	// The helper waits for a byte on this pipe before it looks for the
	// container, which exists only once the runtime has made it.
	createdR, createdW, err := pipe()
	if err != nil {
		return err
	}
	stdin := devnull
	// fd 6 of the helper: the monitor lock it holds from now on.
	extra := []*os.File{outR, errR, createdR, monitor}
	var console string
	switch {
	case o.tty:
		// The runtime sends the container's terminal master to this
		// socket (runc's --console-socket), which the helper listens on.
		lf, path, err := consoleListener(rec.ID)
		if err != nil {
			return err
		}
		defer os.Remove(path)
		files = append(files, lf)
		console = path
		extra = append(extra, lf)
	case o.interactive:
		// The container's stdin is a pipe the helper holds open and
		// writes what `lodge attach` sends into, as docker keeps a
		// detached container's stdin; not this command's stdin, which
		// its caller keeps.
		inR, inW, err := pipe()
		if err != nil {
			return err
		}
		stdin = inR
		extra = append(extra, inW)
	}
	logger := exec.Command("/proc/self/exe", "__logger", rec.ID)
	logger.Stdin, logger.Stdout, logger.Stderr = devnull, nil, nil
	logger.ExtraFiles = extra
	logger.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	logger.Env = os.Environ()
	if err := logger.Start(); err != nil {
		return fmt.Errorf("start the log helper: %w", err)
	}
	savedIn, savedOut, savedErr := os.Stdin, os.Stdout, os.Stderr
	os.Stdin, os.Stdout, os.Stderr = stdin, outW, errW
	runtimeLog := filepath.Join(ctrDir(rec.ID), "runtime.log")
	if o.createOnly {
		err = runtimecli.Create(runtimeState, runtimeLog, bundleDir(rec.ID), rec.ID, console)
	} else {
		_, err = runtimecli.Run(ctx, a.log, runtimeState, runtimeLog, bundleDir(rec.ID), rec.ID, true, console)
	}
	os.Stdin, os.Stdout, os.Stderr = savedIn, savedOut, savedErr
	if err != nil {
		logger.Process.Kill()
		logger.Wait()
		return err
	}
	createdW.Write([]byte{1})
	logger.Process.Release()
	if !o.createOnly {
		rec.emit("start")
	}
	return nil
}

// runExitCode maps a failed start to docker's codes.
func runExitCode(err error) int {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory") && strings.Contains(msg, "exec"):
		return ExitNotFound
	case strings.Contains(msg, "permission denied") && strings.Contains(msg, "exec"):
		return ExitNotRunnable
	}
	return ExitLodge
}

func newID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func writeBundle(bundle string, spec *specs.Spec, bl layers.BundleLayers) error {
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o711); err != nil {
		return err
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return err
	}
	return state.Write(filepath.Join(bundle, layers.BundleFile), bl)
}
