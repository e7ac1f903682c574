package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/seccompbpf"
	"github.com/lodgeruntime/lodge/internal/sharefs"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// ContainerConfig describes a container to create in a sandbox.
type ContainerConfig struct {
	ID     string
	Spec   *specs.Spec
	Rootfs string // host directory of the root filesystem
	// Layers, when set, gives the root as image layers instead (see
	// LayeredRoot; only where CanLayer).
	Layers *LayeredRoot
	Stdio  Stdio
	// Pod places the container in a pod; nil for a lone container.
	Pod *Placement
}

// Placement says how a container shares its pod's VM. In a pod, the
// namespace paths of a spec name the host side of the pod (the pod's
// network namespace, the sandbox container's process): in the guest the
// network namespace is the VM's own, which holds the pod's interfaces, and
// the others are those of the sandbox container's init.
type Placement struct {
	// SandboxContainer is the container whose namespaces the others join;
	// empty for the sandbox container itself.
	SandboxContainer string
}

// ExitStatus is how a process ended.
type ExitStatus = agent.ExitStatus

// Stats are a container's cgroup counters in the guest.
type Stats = agentv1.StatsResponse

// ProcessInfo is one process of a container (guest PID and command).
type ProcessInfo = agentv1.ProcessInfo

// Errors.
var (
	// ErrUnsupported reports a spec that asks for something a VM cannot do.
	ErrUnsupported = errors.New("not supported inside a Lodge VM")
	// ErrVMGone reports a VM that exited under a running container.
	ErrVMGone = errors.New("vm gone")
)

// Container is a container inside a sandbox.
type Container struct {
	id     string
	sb     *Sandbox
	mounts []string // targets attached to the share, in order
	// writable is the host file of its writable layer (layered roots).
	writable string
	// keepsWritable: its writable layer outlives it
	// (LayeredRoot.KeepWritable), so the guest must flush it before the
	// VM ends.
	keepsWritable bool

	init *Process
}

// CreateContainer makes a container in the sandbox, created but not
// started. On error nothing it made is left.
func (s *Sandbox) CreateContainer(ctx context.Context, cc ContainerConfig) (*Container, error) {
	s.phases.mark()
	if !transport.ValidID(cc.ID) {
		return nil, fmt.Errorf("invalid container id %q", cc.ID)
	}
	var joinPID int
	if cc.Pod != nil && cc.Pod.SandboxContainer != "" {
		s.mu.Lock()
		sc := s.containers[cc.Pod.SandboxContainer]
		s.mu.Unlock()
		if sc == nil {
			return nil, fmt.Errorf("container %s: the pod's sandbox container %s is not in this VM", cc.ID, cc.Pod.SandboxContainer)
		}
		joinPID = sc.init.pid
	}
	gs, err := guestSpec(cc.Spec, cc.Pod != nil, joinPID, s.lateNet)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", cc.ID, err)
	}
	if gs.Linux != nil && gs.Linux.Seccomp != nil && !s.agent.Has(agentv1.CapSeccomp) {
		return nil, fmt.Errorf("container %s: %w: the spec asks for a seccomp filter and this guest agent was built without seccomp (rebuild it with `make setup`)",
			cc.ID, ErrUnsupported)
	}
	if cc.Stdio.Terminal != gs.Process.Terminal {
		return nil, fmt.Errorf("container %s: process.terminal is %v but a terminal was %s", cc.ID,
			gs.Process.Terminal, map[bool]string{true: "set up", false: "not set up"}[cc.Stdio.Terminal])
	}
	var cu rollback.Stack
	defer cu.Run()

	s.mu.Lock()
	if _, dup := s.containers[cc.ID]; dup {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %s: %w", cc.ID, ErrExists)
	}
	c := &Container{id: cc.ID, sb: s}
	c.init = &Process{sb: s, cid: cc.ID}
	s.containers[cc.ID] = c
	s.mu.Unlock()
	cu.Add(func() {
		s.mu.Lock()
		delete(s.containers, cc.ID)
		s.mu.Unlock()
	})
	cu.Add(func() { c.unmount(context.Background()) })

	rootfs := &agentv1.Rootfs{ShareTag: SharedTag, Path: cc.ID + "/rootfs"}
	if cc.Layers != nil {
		if !s.CanLayer() {
			return nil, fmt.Errorf("container %s: %w: a root from layers needs the layer store and a guest agent with %q (rebuild it with `make setup`)",
				cc.ID, ErrUnsupported, agentv1.CapLayers)
		}
		if rootfs, err = c.attachLayers(ctx, cc.Layers); err != nil {
			return nil, fmt.Errorf("container %s: rootfs: %w", cc.ID, err)
		}
	} else {
		// A read-only root is read-only throughout, as in the container.
		readonly := cc.Spec.Root != nil && cc.Spec.Root.Readonly
		if readonly {
			makeMountpoints(cc.Rootfs, gs.Mounts)
		}
		if err := c.attach(ctx, cc.Rootfs, "rootfs", readonly, true); err != nil {
			return nil, fmt.Errorf("container %s: rootfs: %w", cc.ID, err)
		}
	}
	// Host paths reach the guest as binds below the share.
	var submounts []string
	for i, m := range gs.Mounts {
		if !isBind(m) {
			continue
		}
		// Keep the source's name last, as a bind mount shows it in mountinfo.
		rel := filepath.Join("mounts", strconv.Itoa(i), sourceName(m.Source))
		rro := hasOption(m.Options, "rro")
		if err := c.attach(ctx, m.Source, rel, rro || hasOption(m.Options, "ro"), rro); err != nil {
			return nil, fmt.Errorf("container %s: mount %s: %w", cc.ID, m.Destination, err)
		}
		gs.Mounts[i].Source = filepath.Join(cc.ID, rel)
		for _, sub := range mountsBelow(m.Source) {
			submounts = append(submounts, filepath.Join(cc.ID, rel, sub))
		}
	}
	specJSON, err := json.Marshal(gs)
	if err != nil {
		return nil, err
	}

	seccomp, seccompKey := s.hostSeccomp(ctx, gs)
	streams, err := c.init.attach(cc.Stdio)
	if err != nil {
		return nil, fmt.Errorf("container %s: stdio: %w", cc.ID, err)
	}
	cu.Add(func() { closeAll(streams) })
	c.init.pid, err = s.agent.Create(ctx, &agentv1.CreateRequest{
		ContainerId: cc.ID,
		Spec:        specJSON,
		Rootfs:      rootfs,
		Stdio:       wireStdio(cc.Stdio),
		Submounts:   submounts,
		PodSandbox:  cc.Pod != nil && cc.Pod.SandboxContainer == "" && s.agent.Has(agentv1.CapPodHolder),
		Seccomp:     seccomp,
	})
	if err != nil {
		return nil, fmt.Errorf("container %s: create in guest: %w", cc.ID, err)
	}
	if seccomp != nil {
		s.mu.Lock()
		if s.seccompSent == nil {
			s.seccompSent = map[string]bool{}
		}
		s.seccompSent[seccompKey] = true
		s.mu.Unlock()
	}
	cu.Release()
	s.log.Debug("container created", "container_id", cc.ID, "pid", c.init.pid)
	s.phases.done(PhaseCreate)
	return c, nil
}

// hostSeccomp returns the host's compile of spec's seccomp profile for
// the agent, and its key, or nil: without a profile, when this sandbox's
// agent was given it before, or when the host cannot compile it (the
// guest then compiles the profile itself).
func (s *Sandbox) hostSeccomp(ctx context.Context, spec *specs.Spec) (*agentv1.SeccompProgram, string) {
	if s.seccomp == nil || spec.Linux == nil || spec.Linux.Seccomp == nil {
		return nil, ""
	}
	key, b, err := s.seccomp.Key(spec.Linux.Seccomp)
	if err == nil {
		s.mu.Lock()
		sent := s.seccompSent[key]
		s.mu.Unlock()
		if sent {
			return nil, ""
		}
	}
	var p *seccompbpf.Program
	if err == nil {
		p, err = s.seccomp.Program(ctx, key, b)
	}
	if err != nil {
		s.log.Debug("seccomp profile not compiled on the host: the guest compiles it", "err", err)
		return nil, ""
	}
	return &agentv1.SeccompProgram{Flags: uint32(p.Flags), Filter: p.Filter}, key
}

func wireStdio(s Stdio) *agentv1.Stdio {
	return &agentv1.Stdio{Stdin: s.Stdin != nil, Stdout: s.Stdout != nil,
		Stderr: s.Stderr != nil && !s.Terminal, Terminal: s.Terminal}
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// attach makes a host path visible at rel below the container's directory
// in the share, read-only (recursively) if asked.
func (c *Container) attach(ctx context.Context, src, rel string, readonly, recursive bool) error {
	target := filepath.Join(c.id, rel)
	if err := c.sb.share.Attach(ctx, sharefs.Attachment{Source: src, Target: target,
		ReadOnly: readonly, Recursive: recursive}); err != nil {
		return err
	}
	c.mounts = append(c.mounts, target)
	return nil
}

// ID is the container's id.
func (c *Container) ID() string { return c.id }

// Init is the container's init process.
func (c *Container) Init() *Process { return c.init }

// Start runs the container's process.
func (c *Container) Start(ctx context.Context) error {
	c.sb.phases.mark()
	if err := c.sb.agent.Start(ctx, c.id); err != nil {
		return fmt.Errorf("container %s: start: %w", c.id, err)
	}
	c.sb.phases.done(PhaseStart)
	return nil
}

// ExecConfig describes a process to start in a running container.
type ExecConfig struct {
	ID      string
	Process *specs.Process
	Stdio   Stdio
}

// Exec starts a process in the container.
func (c *Container) Exec(ctx context.Context, ec ExecConfig) (*Process, error) {
	if !transport.ValidID(ec.ID) {
		return nil, fmt.Errorf("invalid exec id %q", ec.ID)
	}
	if ec.Process == nil || len(ec.Process.Args) == 0 {
		return nil, fmt.Errorf("exec %s: no process args", ec.ID)
	}
	b, err := json.Marshal(guestProcess(ec.Process))
	if err != nil {
		return nil, err
	}
	p := &Process{sb: c.sb, cid: c.id, execID: ec.ID}
	streams, err := p.attach(ec.Stdio)
	if err != nil {
		return nil, fmt.Errorf("exec %s: stdio: %w", ec.ID, err)
	}
	p.pid, err = c.sb.agent.Exec(ctx, &agentv1.ExecRequest{ContainerId: c.id, ExecId: ec.ID, Process: b, Stdio: wireStdio(ec.Stdio)})
	if err != nil {
		closeAll(streams)
		return nil, fmt.Errorf("exec %s in %s: %w", ec.ID, c.id, err)
	}
	return p, nil
}

// SignalAll sends sig to every process of the container.
func (c *Container) SignalAll(ctx context.Context, sig int) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("invalid signal %d", sig)
	}
	return c.sb.agent.Signal(ctx, c.id, "", uint32(sig), true)
}

// Changes opens the container's writable layer (with whole, its whole
// root) as the agent sends it: an OCI layer tar, from the guest, so
// hostile (see layers.ReadChanges).
func (c *Container) Changes(whole bool) (net.Conn, error) {
	if !c.sb.agent.Has(agentv1.CapChanges) {
		return nil, fmt.Errorf("container %s: %w: its VM's agent cannot send a container's changes (it predates lodge commit; run lodge setup, then start the container again)", c.id, ErrUnsupported)
	}
	return c.sb.agent.OpenChanges(c.id, whole)
}

// DialPort connects to 127.0.0.1:port in the container's network
// namespace in its guest (lodge port-forward).
func (c *Container) DialPort(ctx context.Context, port uint16) (net.Conn, error) {
	if !c.sb.agent.Has(agentv1.CapPortIn) {
		return nil, fmt.Errorf("container %s: %w: its VM's agent cannot forward a port into a container (run lodge setup, then start the container again)", c.id, ErrUnsupported)
	}
	return c.sb.agent.DialContainerPort(ctx, c.id, port)
}

// Watch opens a stream of what changes below dir, an absolute path in the
// container (lodge watch): one JSON event a line, from the guest, so
// hostile. Closing it ends the watch.
func (c *Container) Watch(ctx context.Context, dir string, recursive bool) (net.Conn, error) {
	if !c.sb.agent.Has(agentv1.CapWatch) {
		return nil, fmt.Errorf("container %s: %w: its VM's agent cannot watch files (run lodge setup, then start the container again)", c.id, ErrUnsupported)
	}
	return c.sb.agent.OpenWatch(ctx, c.id, dir, recursive)
}

// Pause freezes the container's processes.
func (c *Container) Pause(ctx context.Context) error { return c.sb.agent.Pause(ctx, c.id) }

// Reclaim drops the container's file cache in its guest, whose freed
// pages go back to the host (lodge pause --reclaim); it returns the
// cache's size before and after.
func (c *Container) Reclaim(ctx context.Context) (before, after uint64, err error) {
	return c.sb.agent.Reclaim(ctx, c.id)
}

// Resume thaws the container's processes.
func (c *Container) Resume(ctx context.Context) error { return c.sb.agent.Resume(ctx, c.id) }

// Pids lists the container's processes.
func (c *Container) Pids(ctx context.Context) ([]*ProcessInfo, error) {
	return c.sb.agent.Pids(ctx, c.id)
}

// Stats reads the container's cgroup counters in the guest.
func (c *Container) Stats(ctx context.Context) (*Stats, error) { return c.sb.agent.Stats(ctx, c.id) }

// Update changes the container's resource limits.
func (c *Container) Update(ctx context.Context, r *specs.LinuxResources) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return c.sb.agent.Update(ctx, c.id, b)
}

// Delete removes the container from the guest and unmounts its files.
func (c *Container) Delete(ctx context.Context) error {
	err := c.sb.agent.Delete(ctx, c.id)
	c.sb.mu.Lock()
	delete(c.sb.containers, c.id)
	c.sb.mu.Unlock()
	return errors.Join(err, c.unmount(ctx))
}

// unmount detaches the container's files from the share, last first, and
// removes its directory there.
func (c *Container) unmount(ctx context.Context) error {
	var errs []error
	for i := len(c.mounts) - 1; i >= 0; i-- {
		errs = append(errs, c.sb.share.Detach(ctx, c.mounts[i]))
	}
	c.mounts = nil
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return errors.Join(c.sb.share.Remove(ctx, c.id), c.removeWritable())
}
