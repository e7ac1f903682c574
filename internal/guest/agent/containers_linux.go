package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/guest/directinit"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// containers implements agentv1.ContainersService.
type containers struct {
	log        *slog.Logger
	stateDir   string
	sharesDir  string
	streams    *streams
	caps       []string
	reaper     *reaper
	noDirect   bool   // every container through libcontainer (Config.NoDirect)
	directInit string // Config.DirectInit

	mu     sync.Mutex // guards byID and shares
	byID   map[string]*container
	shares map[string]bool // mounted share tags
}

// runner is what the agent does with a container: a libcontainer
// container (lcContainer), a direct one (see direct_linux.go) or a pod
// holder (see holder_linux.go).
type runner interface {
	ID() string
	Exec() error
	Run(*libcontainer.Process) (waitSignaller, int, error)
	Processes() ([]int, error)
	Signal(os.Signal) error
	Pause() error
	Resume() error
	Stats() (*libcontainer.Stats, error)
	Config() configs.Config
	Set(configs.Config) error
	Destroy() error
}

// annotationInit is config.AnnotationInit (the guest does not import the
// host's config): "libcontainer" makes the container through libcontainer
// even where a direct container would serve.
const annotationInit = "io.lodge.init"

// lcContainer is a libcontainer container as a runner.
type lcContainer struct{ *libcontainer.Container }

func (c lcContainer) Run(lp *libcontainer.Process) (waitSignaller, int, error) {
	return viaLibcontainer(c.Container.Run)(lp)
}

// container is one OCI container in the guest.
type container struct {
	c runner
	// binds are the submounts made mounts of their own in the agent's
	// namespace (9p shares), unmounted when the container goes.
	binds []string
	// layered is the mounts of a root built from layer images (see
	// layeredRoot), unmounted after binds.
	layered []string

	mu    sync.Mutex          // guards procs
	procs map[string]*process // by exec id; "" is init
}

func newContainers(cfg Config, st *streams) *containers {
	return &containers{
		log:        cfg.Log,
		stateDir:   cfg.StateDir,
		sharesDir:  cfg.SharesDir,
		streams:    st,
		caps:       cfg.Capabilities,
		reaper:     newReaper(),
		noDirect:   cfg.NoDirect,
		directInit: cfg.DirectInit,
		byID:       map[string]*container{},
		shares:     map[string]bool{},
	}
}

func (cs *containers) get(id string) (*container, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.byID[id]
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "container %q: %v", id, errNotFound)
	}
	return c, nil
}

func (c *container) proc(execID string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[execID]
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "process %q of container %s: %v", execID, c.c.ID(), errNotFound)
	}
	return p, nil
}

func (cs *containers) Create(ctx context.Context, req *agentv1.CreateRequest) (*agentv1.CreateResponse, error) {
	id := req.ContainerId
	if !transport.ValidID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid container id %q", id)
	}
	var spec specs.Spec
	if err := json.Unmarshal(req.Spec, &spec); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode spec: %v", err)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "spec has no process args")
	}
	rootfs, err := cs.shareFile(req.Rootfs)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "rootfs: %v", err)
	}
	share := filepath.Join(cs.sharesDir, req.Rootfs.ShareTag)
	for i, m := range spec.Mounts {
		if !isBind(m) {
			continue
		}
		src, err := shareRelative(share, m.Source)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "mount %s: %v", m.Destination, err)
		}
		spec.Mounts[i].Source = src
	}
	var subs []string
	for _, sub := range req.Submounts {
		p, err := shareRelative(share, sub)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "submount: %v", err)
		}
		subs = append(subs, p)
	}

	cs.mu.Lock()
	if _, dup := cs.byID[id]; dup {
		cs.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %q already exists", id)
	}
	cs.byID[id] = nil // reserve the id
	cs.mu.Unlock()
	var cu rollback.Stack
	defer cu.Run()
	cu.Add(func() {
		cs.mu.Lock()
		delete(cs.byID, id)
		cs.mu.Unlock()
		cs.streams.drop(id)
	})

	binds, berr := bindSubmounts(subs)
	cu.Add(func() { unmountAll(binds) })
	if berr != nil {
		return nil, status.Errorf(codes.Internal, "submount: %v", berr)
	}
	var layered []string
	cu.Add(func() { unmountLayered(layered) })
	buildRoot := func(writable string) error {
		t := time.Now()
		root, mounts, err := layeredRoot(share, req.Rootfs.Layers, writable)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "rootfs: %v", err)
		}
		cs.log.Info("root from layers", "container_id", id, "layers", len(req.Rootfs.Layers),
			"writable", writable != "", "took", time.Since(t).Round(time.Millisecond))
		rootfs, layered = root, mounts
		return nil
	}
	if len(req.Rootfs.Layers) > 0 {
		writable := req.Rootfs.Writable
		if req.PodSandbox {
			writable = "" // a pod holder's root is its image's layers alone
		}
		if err := buildRoot(writable); err != nil {
			return nil, err
		}
	}
	// fullRoot gives a pod's sandbox container that is not a holder the
	// root a container has, with its writable layer.
	fullRoot := func() error {
		if len(req.Rootfs.Layers) == 0 {
			return nil
		}
		unmountLayered(layered)
		layered = nil
		return buildRoot(req.Rootfs.Writable)
	}
	var holder *holderPlan
	lean := false // a sandbox container started as a direct one trimmed to a holder's plan
	if req.PodSandbox {
		var why string
		if holder, why = planHolder(&spec, rootfs, req.Stdio); holder == nil {
			if lean = holdsButForSeccomp(&spec, rootfs, req.Stdio); lean {
				cs.log.Info("pod sandbox as a direct container with a holder's root", "container_id", id, "why", why)
			} else {
				cs.log.Info("pod sandbox as a full container", "container_id", id, "why", why)
				if err := fullRoot(); err != nil {
					return nil, err
				}
			}
		}
	}

	if len(req.Rootfs.Layers) == 0 {
		if err := readonlyNodesAsBinds(&spec, rootfs); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "readonly path: %v", err)
		}
	}
	spec.Root = &specs.Root{Path: rootfs, Readonly: spec.Root != nil && spec.Root.Readonly}
	spec.Hooks = nil // hooks run on the host, where the runtime spec says they run
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	spec.Linux.CgroupsPath = "/lodge/" + id
	for i, d := range spec.Linux.Devices {
		if d.Type == "p" { // a FIFO has no device number; libcontainer checks it
			spec.Linux.Devices[i].Major, spec.Linux.Devices[i].Minor = 0, 0
		}
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: &spec})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	if holder != nil {
		return cs.createHolder(id, rootfs, holder, cfg, binds, layered, &cu)
	}
	lp, err := newProcess(spec.Process)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	lp.Init = true
	t0 := time.Now()
	var (
		r     runner
		start starter
		how   = "direct"
	)
	plan, why := planDirect(id, cfg, lp)
	switch v := spec.Annotations[annotationInit]; {
	case v == "libcontainer":
		plan, why = nil, annotationInit+"=libcontainer"
	case v != "" && v != "direct":
		return nil, status.Errorf(codes.InvalidArgument, "annotation %s=%q: want direct or libcontainer", annotationInit, v)
	case cs.noDirect:
		plan, why = nil, "the agent makes no direct containers"
	}
	switch {
	case lean && plan != nil:
		plan.asHolder()
	case lean: // libcontainer after all: the root a container has
		if err := fullRoot(); err != nil {
			return nil, err
		}
		cfg.Rootfs = rootfs
	}
	var d *direct
	// The host's compile of the profile is kept for every later process
	// of it, whichever way this container starts (the host sends it once).
	fromHost := false // the init's program is the host's compile
	if p := req.GetSeccomp(); p != nil && cfg.Seccomp != nil {
		var prog *directinit.SeccompProgram
		prog, fromHost = compiledSeccomp.adopt(cfg.Seccomp, &directinit.SeccompProgram{Flags: uint(p.GetFlags()), Filter: p.GetFilter()})
		if plan != nil {
			plan.init.SeccompProgram = prog
		}
	}
	if plan != nil {
		if d, err = newDirect(cs.directInit, id, cfg, plan); err != nil {
			return nil, status.Errorf(codes.Internal, "create: %v", err)
		}
		r, start = d, d.startInit
	} else {
		lc, err := libcontainer.Create(cs.stateDir, id, cfg)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "create: %v", err)
		}
		r, start, how = lcContainer{lc}, viaLibcontainer(lc.Start), "libcontainer"
	}
	cu.Add(func() { r.Destroy() })
	t1 := time.Now()
	p, err := cs.startProcess(ctx, id, "", lp, req.Stdio, start)
	if err != nil {
		return nil, err
	}
	c := &container{c: r, binds: binds, layered: layered, procs: map[string]*process{"": p}}
	cs.mu.Lock()
	cs.byID[id] = c
	cs.mu.Unlock()
	cu.Release()
	args := []any{"container_id", id, "pid", p.pid, "init", how,
		"create", t1.Sub(t0).Round(time.Millisecond), "init_start", time.Since(t1).Round(time.Millisecond)}
	switch {
	case plan == nil:
		args = append(args, "why", why)
	case cfg.Seccomp != nil:
		// Whether this guest compiled the profile now, was given the
		// host's compile of it, or had it (from an earlier container, or
		// its template's warm-up).
		seccomp := "compiled before"
		switch {
		case d.seccompCompiled > 0:
			seccomp = "compiled in " + d.seccompCompiled.Round(time.Millisecond).String()
		case fromHost:
			seccomp = "compiled on the host"
		}
		args = append(args, "seccomp", seccomp)
	}
	cs.log.Info("container created", args...)
	return &agentv1.CreateResponse{Pid: int32(p.pid)}, nil
}

// createHolder makes the pod holder of plan and registers it as container
// id (whose reserved id, binds and layered root cu undoes on error).
func (cs *containers) createHolder(id, rootfs string, plan *holderPlan, cfg *configs.Config,
	binds, layered []string, cu *rollback.Stack) (*agentv1.CreateResponse, error) {
	t0 := time.Now()
	h, err := startHolder(id, rootfs, plan, cfg, cs.reaper)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "pod holder: %v", err)
	}
	p := &process{p: h.proc, pid: h.proc.Pid, exited: make(chan struct{}), reaper: cs.reaper}
	go p.wait()
	c := &container{c: h, binds: binds, layered: layered, procs: map[string]*process{"": p}}
	cs.mu.Lock()
	cs.byID[id] = c
	cs.mu.Unlock()
	cu.Release()
	cs.log.Info("pod holder created", "container_id", id, "pid", p.pid, "program", plan.path,
		"took", time.Since(t0).Round(time.Millisecond))
	if !cs.noDirect && cs.directInit != "" {
		go cs.warmFirstStep()
	}
	return &agentv1.CreateResponse{Pid: int32(p.pid)}, nil
}

func (cs *containers) Start(ctx context.Context, req *agentv1.StartRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Exec(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "start: %v", err)
	}
	if p, err := c.proc(""); err == nil {
		waitExeced(p.pid)
	}
	return &agentv1.Empty{}, nil
}

// waitExeced waits (briefly) until pid runs the user's program rather than
// libcontainer's init, so that a signal sent right after start reaches the
// program and not the init that is about to exec it.
func waitExeced(pid int) {
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || exe != self {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (cs *containers) Exec(ctx context.Context, req *agentv1.ExecRequest) (*agentv1.CreateResponse, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.ExecId == "" || !transport.ValidID(req.ExecId) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid exec id %q", req.ExecId)
	}
	var sp specs.Process
	if err := json.Unmarshal(req.Process, &sp); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode process: %v", err)
	}
	if len(sp.Args) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "process has no args")
	}
	c.mu.Lock()
	if _, dup := c.procs[req.ExecId]; dup {
		c.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "exec %q already exists", req.ExecId)
	}
	c.procs[req.ExecId] = nil
	c.mu.Unlock()
	lp, err := newProcess(&sp)
	if err == nil {
		var p *process
		if p, err = cs.startProcess(ctx, req.ContainerId, req.ExecId, lp, req.Stdio, c.c.Run); err == nil {
			c.mu.Lock()
			c.procs[req.ExecId] = p
			c.mu.Unlock()
			return &agentv1.CreateResponse{Pid: int32(p.pid)}, nil
		}
	}
	c.mu.Lock()
	delete(c.procs, req.ExecId)
	c.mu.Unlock()
	cs.streams.dropProcess(req.ContainerId, req.ExecId)
	if _, ok := status.FromError(err); ok {
		return nil, err
	}
	return nil, status.Errorf(codes.InvalidArgument, "%v", err)
}

func (cs *containers) Signal(ctx context.Context, req *agentv1.SignalRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.Signal == 0 || req.Signal > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid signal %d", req.Signal)
	}
	sig := unix.Signal(req.Signal)
	switch {
	case req.All:
		pids, err := c.c.Processes()
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "list processes: %v", err)
		}
		for _, pid := range pids {
			unix.Kill(pid, sig)
		}
	case req.ExecId == "":
		err = c.c.Signal(sig)
	default:
		var p *process
		if p, err = c.proc(req.ExecId); err == nil {
			err = p.p.Signal(sig)
		}
	}
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		if errors.Is(err, libcontainer.ErrNotRunning) || errors.Is(err, os.ErrProcessDone) {
			return nil, status.Errorf(codes.NotFound, "signal %d: process already finished", req.Signal)
		}
		return nil, status.Errorf(codes.FailedPrecondition, "signal %d: %v", req.Signal, err)
	}
	return &agentv1.Empty{}, nil
}

func (cs *containers) Wait(ctx context.Context, req *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	p, err := c.proc(req.ExecId)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	resp := proto.Clone(p.status).(*agentv1.WaitResponse)
	if req.ExecId == "" {
		// The container's cgroup lives until Delete: its counter tells
		// an OOM kill from any other SIGKILL.
		resp.OomKilled = oomKills(req.ContainerId) > 0
	}
	return resp, nil
}

// oomKills reads the oom_kill count of a container's memory cgroup (cgroup
// v2 memory.events; libcontainer's stats read memory.stat, which lacks it).
func oomKills(id string) uint64 {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/lodge", id, "memory.events"))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func (cs *containers) ResizePty(ctx context.Context, req *agentv1.ResizePtyRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	p, err := c.proc(req.ExecId)
	if err != nil {
		return nil, err
	}
	if err := p.resize(req.Width, req.Height); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	return &agentv1.Empty{}, nil
}

func (cs *containers) Pause(ctx context.Context, req *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return cs.each(req, runner.Pause)
}

func (cs *containers) Resume(ctx context.Context, req *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return cs.each(req, runner.Resume)
}

func (cs *containers) each(req *agentv1.ContainerRequest, f func(runner) error) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := f(c.c); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	return &agentv1.Empty{}, nil
}

func (cs *containers) Pids(ctx context.Context, req *agentv1.ContainerRequest) (*agentv1.PidsResponse, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	pids, err := c.c.Processes()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	resp := &agentv1.PidsResponse{}
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		if len(cmd) > 256 {
			cmd = cmd[:256]
		}
		resp.Processes = append(resp.Processes, &agentv1.ProcessInfo{Pid: int32(pid), Command: cmd})
	}
	return resp, nil
}

func (cs *containers) Stats(ctx context.Context, req *agentv1.ContainerRequest) (*agentv1.StatsResponse, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	st, err := c.c.Stats()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	cg := st.CgroupStats
	if cg == nil {
		return &agentv1.StatsResponse{}, nil
	}
	cpu, mem := cg.CpuStats, cg.MemoryStats
	return &agentv1.StatsResponse{
		CpuUsageNs:          cpu.CpuUsage.TotalUsage,
		CpuUserNs:           cpu.CpuUsage.UsageInUsermode,
		CpuSystemNs:         cpu.CpuUsage.UsageInKernelmode,
		CpuPeriods:          cpu.ThrottlingData.Periods,
		CpuThrottledPeriods: cpu.ThrottlingData.ThrottledPeriods,
		CpuThrottledNs:      cpu.ThrottlingData.ThrottledTime,
		MemoryUsage:         mem.Usage.Usage,
		MemoryLimit:         mem.Usage.Limit,
		MemoryMaxUsage:      mem.Usage.MaxUsage,
		PidsCurrent:         cg.PidsStats.Current,
		PidsLimit:           cg.PidsStats.Limit,
		OomKills:            oomKills(req.ContainerId),
	}, nil
}

func (cs *containers) Update(ctx context.Context, req *agentv1.UpdateRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	var r specs.LinuxResources
	if err := json.Unmarshal(req.Resources, &r); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decode resources: %v", err)
	}
	cfg := c.c.Config()
	applyResources(&cfg, &r)
	if err := c.c.Set(cfg); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "update: %v", err)
	}
	return &agentv1.Empty{}, nil
}

// applyResources copies the fields `runc update` changes.
func applyResources(cfg *configs.Config, r *specs.LinuxResources) {
	res := cfg.Cgroups.Resources
	if m := r.Memory; m != nil {
		set(&res.Memory, m.Limit)
		set(&res.MemoryReservation, m.Reservation)
		set(&res.MemorySwap, m.Swap)
	}
	if cpu := r.CPU; cpu != nil {
		if cpu.Shares != nil {
			res.CpuShares = *cpu.Shares
			res.CpuWeight = 0
		}
		set(&res.CpuQuota, cpu.Quota)
		if cpu.Period != nil {
			res.CpuPeriod = *cpu.Period
		}
		if cpu.Cpus != "" {
			res.CpusetCpus = cpu.Cpus
		}
		if cpu.Mems != "" {
			res.CpusetMems = cpu.Mems
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		res.PidsLimit = p.Limit
	}
	if b := r.BlockIO; b != nil && b.Weight != nil {
		res.BlkioWeight = *b.Weight
	}
}

func set(dst *int64, v *int64) {
	if v != nil {
		*dst = *v
	}
}

func (cs *containers) Delete(ctx context.Context, req *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Destroy(); err != nil {
		return nil, status.Errorf(codes.Internal, "destroy: %v", err)
	}
	unmountAll(c.binds)
	unmountLayered(c.layered)
	c.mu.Lock()
	for _, p := range c.procs {
		if p != nil {
			p.closeStreams()
		}
	}
	c.mu.Unlock()
	cs.mu.Lock()
	delete(cs.byID, req.ContainerId)
	cs.mu.Unlock()
	cs.streams.drop(req.ContainerId)
	return &agentv1.Empty{}, nil
}

// newProcess turns the spec's process into libcontainer's.
func newProcess(p *specs.Process) (*libcontainer.Process, error) {
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		NoNewPrivileges: &p.NoNewPrivileges,
		Scheduler:       p.Scheduler,
		IOPriority:      p.IOPriority,
		AppArmorProfile: p.ApparmorProfile,
		Label:           p.SelinuxLabel,
	}
	if p.ConsoleSize != nil {
		lp.ConsoleWidth, lp.ConsoleHeight = uint16(p.ConsoleSize.Width), uint16(p.ConsoleSize.Height)
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective,
			Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, rl := range p.Rlimits {
		t, ok := rlimits[rl.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: t, Hard: rl.Hard, Soft: rl.Soft})
	}
	return lp, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
