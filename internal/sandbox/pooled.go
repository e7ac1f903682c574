package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/pool"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/sharefs"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// poolWarmUpID names the container a pooled clone makes and removes
// before it is offered.
const poolWarmUpID = "lodge-pool-warm-up"

// KeepPooled is a pooled clone's keeper (see internal/pool): it starts a
// clone of cfg's template in slot (its NIC a tap of its own, its share
// its own), makes and removes one container in it so that the clone's QEMU
// has translated the guest's container path, parks the agent, stops the
// guest and offers the clone. Once a sandbox took it, the keeper stays
// QEMU's parent and ends it when that sandbox's process exits; it returns
// when the VM is gone, having removed everything of it but slot itself.
func KeepPooled(ctx context.Context, deps Deps, cfg Config, slot *pool.Slot, key string) error {
	tap, err := netsetup.PlaceholderTap()
	if err != nil {
		return err
	}
	defer tap.Close()
	cfg.VM.NICs = []vmm.NIC{{Tap: tap, MAC: TemplateSlotMAC}}
	t := *cfg.Templates
	t.Pool, t.Refill = nil, nil
	cfg.Templates = &t
	cfg.Dir = filepath.Join(slot.Dir, pool.SandboxDir)
	sb, err := Create(ctx, deps, cfg)
	if err != nil {
		return err
	}
	defer func() {
		// Killed first: its monitor is let go of, and the VM is no one's.
		dead, cancel := context.WithCancel(context.Background())
		cancel()
		sb.vm.Shutdown(dead)
		sb.Destroy(context.Background())
	}()
	switch {
	case sb.start.Path != StartClone:
		return fmt.Errorf("a pooled clone must be a clone, but it cold-booted (%s)", sb.start.Reason)
	case sb.start.Template != key:
		return fmt.Errorf("the pool is for template %s but this host's sandboxes clone %s", key, sb.start.Template)
	}
	// The layer every keeper's warm-up root comes from stays where it is
	// (beside the pools), so that it is converted once.
	layer := filepath.Join(filepath.Dir(filepath.Dir(slot.Dir)), "warm-up-layer")
	if err := sb.warmUp(ctx, slot.Dir, layer); err != nil {
		return err
	}
	sb.agent.Close()
	conn, err := sb.vm.Dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	pctx, cancel := context.WithTimeout(ctx, cloneRestoreTimeout)
	defer cancel()
	if err := transport.HostPark(pctx, conn); err != nil {
		return fmt.Errorf("park the pooled clone's agent: %w", err)
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errors.New("the agent channel is not a unix socket")
	}
	agentFile, err := uc.File()
	if err != nil {
		return err
	}
	defer agentFile.Close()
	ns, err := sb.share.Namespace(ctx)
	if err != nil {
		return err
	}
	defer ns.Close()
	p, ok := sb.vm.(vmm.Pauser)
	if !ok {
		return errors.New("the VMM driver cannot pause a VM")
	}
	if err := p.Pause(ctx); err != nil {
		return err
	}
	p.ReleaseMonitor()
	info := sb.vm.Info()
	sb.log.Info("clone pooled", "template", key, "pid", info.PID)
	cl, err := slot.Offer(ctx, pool.Offer{KeeperPID: os.Getpid(), VMPID: info.PID, StateDir: cfg.Dir,
		ShareDir: sb.share.Path(), Started: info.Started}, []*os.File{agentFile, ns, tap}, sb.vm.Done())
	if errors.Is(err, pool.ErrDrained) {
		sb.log.Info("pooled clone drained", "template", key)
		return nil
	}
	if err != nil {
		return err
	}
	defer cl.Close()
	agentFile.Close()
	ns.Close()
	tap.Close()
	conn.Close()
	sb.log.Info("pooled clone handed out", "template", key, "claimant_pid", cl.PID)
	select {
	case <-cl.Gone():
		sb.log.Info("the sandbox that took the clone exited: ending the clone", "claimant_pid", cl.PID)
	case <-sb.vm.Done():
	}
	return nil
}

// warmUp makes and removes containers, unstarted, as a sandbox's first
// ones would be made: one whose root is a directory attached to the share
// (a lone container's: lodge-runtime bundles) and, where the sandbox builds
// roots from layers, one whose root is built in the guest from an erofs
// image of layer and a writable layer (a containerd container's). The
// guest's share mount, loop, erofs, ext4 and overlay mounts, libcontainer's
// runc init and the agent's container code then run once in this QEMU, so
// that they are translated before the clone is offered.
func (s *Sandbox) warmUp(ctx context.Context, dir, layer string) error {
	root := filepath.Join(dir, "warm-up")
	if err := noopRoot(root); err != nil {
		return err
	}
	start := time.Now()
	cfgs := []ContainerConfig{{ID: poolWarmUpID, Rootfs: root}}
	if s.CanLayer() {
		if _, err := os.Stat(layer); err != nil {
			// Made aside and renamed: a layer is never seen half made,
			// and a keeper that lost the race uses the winner's.
			tmp, err := os.MkdirTemp(filepath.Dir(layer), ".warm-up-layer-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			if err := noopRoot(tmp); err != nil {
				return err
			}
			os.Rename(tmp, layer)
		}
		cfgs = append(cfgs, ContainerConfig{ID: poolWarmUpID + "-layers",
			Layers: &LayeredRoot{Lower: []string{layer}, Writable: filepath.Join(dir, "warm-up.img")}})
	}
	for _, cc := range cfgs {
		spec := oci.DefaultSpec()
		spec.Process.Terminal = false
		spec.Process.Args = []string{"/noop"}
		spec.Root = &specs.Root{Path: root}
		cc.Spec = spec
		c, err := s.CreateContainer(ctx, cc)
		if err != nil {
			return fmt.Errorf("warm-up container: %w", err)
		}
		if err := c.Delete(ctx); err != nil {
			return fmt.Errorf("warm-up container: %w", err)
		}
	}
	s.log.Info("pooled clone warmed up", "containers", len(cfgs), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// noopRoot makes dir a root whose one file is /noop, a program that is
// never started (runc init only checks that it exists).
func noopRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "noop"), nil, 0o755)
}

// claimClone starts the sandbox as a pooled clone of t, if one is ready
// (nil, nil when none is): the clone's QEMU and keeper join this process's
// host cgroups at normal priority, the guest resumes, its agent is synced
// on the parked channel and given the sandbox's identity, and the clone's
// tap takes the place of the sandbox's. On error the clone is given back to
// its keeper, which ends it.
func claimClone(ctx context.Context, deps Deps, cfg Config, t *template.Template, log *slog.Logger, ph *phases) (*Sandbox, error) {
	h, err := cfg.Templates.Pool.Claim(ctx, t.Meta.Key)
	if h == nil {
		return nil, err
	}
	var cu rollback.Stack
	defer cu.Run()
	defer func() {
		for _, f := range h.Files {
			f.Close()
		}
	}()
	cu.Add(h.Refuse)
	o := h.Offer
	ad, ok := deps.Driver.(vmm.Adopter)
	if !ok {
		return nil, errors.New("the VMM driver cannot adopt a pooled clone")
	}
	if err := hostcg.JoinOwn(o.VMPID, o.KeeperPID); err != nil {
		return nil, err
	}
	if err := schedNormal(o.VMPID, o.KeeperPID); err != nil {
		return nil, err
	}
	vm, err := ad.Adopt(ctx, vmm.Adopted{ID: cfg.ID, PID: o.VMPID, StateDir: o.StateDir, Accel: cfg.VM.Accel, Started: o.Started})
	if err != nil {
		return nil, err
	}
	cu.Add(func() { vm.Shutdown(context.Background()) })
	ph.done(PhaseVMMStart)
	share, err := sharefs.Adopt(ctx, o.ShareDir, h.Files[pool.FileShareNS])
	if err != nil {
		return nil, err
	}
	cu.Add(share.Stop)
	if err := vm.(vmm.Pauser).Resume(ctx); err != nil {
		return nil, err
	}
	conn, err := net.FileConn(h.Files[pool.FileAgent])
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, cloneRestoreTimeout)
	defer cancel()
	client, err := connectAgent(rctx, vm, conn, cloneRestoreTimeout)
	if err != nil {
		conn.Close()
		return nil, err
	}
	cu.Add(func() { client.Close() })
	if err := identify(rctx, client, cfg.ID); err != nil {
		return nil, err
	}
	if err := client.ForwardLogs(log); err != nil {
		log.Warn("guest log stream", "err", err)
	}
	if len(cfg.VM.NICs) > 0 {
		if err := netsetup.SwapTap(cfg.VM.NICs[0].Tap, h.Files[pool.FileTap]); err != nil {
			return nil, fmt.Errorf("give the pooled clone the sandbox's network: %w", err)
		}
	}
	if err := h.Accept(); err != nil {
		return nil, err
	}
	ph.done(PhaseRestore)
	log.Info("vm started", "vmm", "qemu", "pid", o.VMPID, "accel", cfg.VM.Accel, "start", StartClone,
		"template", t.Meta.Key, "pooled", true, "keeper_pid", o.KeeperPID)
	cu.Release()
	vc := CloneVM(cfg.VM, t)
	return &Sandbox{id: cfg.ID, dir: cfg.Dir, log: log, phases: ph, vm: vm, hostMemory: hostMemoryOf(vc), share: share,
		agent: client, start: StartInfo{Path: StartClone, Template: t.Meta.Key, Pooled: true, VCPUs: vc.VCPUs, MemoryMiB: vc.MemoryMiB}, layers: cfg.Layers,
		seccomp: cfg.Seccomp, lateNet: cfg.LateNetwork, containers: map[string]*Container{}}, nil
}

// CloneVM is the shape of base's clone of t, for what it may take of the
// host (hostMemoryOf).
func CloneVM(base vmm.Config, t *template.Template) vmm.Config {
	base.VCPUs, base.MemoryMiB = t.Meta.Shape.VCPUs, t.Meta.Shape.MemoryMiB
	return base
}

// schedNormal gives every thread of pids the normal scheduling policy: a
// pool fills at idle priority (SCHED_IDLE), so that it takes only CPU time
// no one else wants; a clone handed out runs like any other VM.
func schedNormal(pids ...int) error {
	for _, pid := range pids {
		if err := setSched("/proc/"+strconv.Itoa(pid)+"/task", unix.SCHED_NORMAL); err != nil {
			return fmt.Errorf("pid %d: normal priority: %w", pid, err)
		}
	}
	return nil
}

// SchedIdle puts every thread of this process at idle priority (a pool's
// keeper, before it starts QEMU, which inherits it).
func SchedIdle() error { return setSched("/proc/self/task", unix.SCHED_IDLE) }

// setSched gives every thread listed in tasks (a /proc/PID/task) policy.
func setSched(tasks string, policy uint32) error {
	ents, err := os.ReadDir(tasks)
	if err != nil {
		return err
	}
	for _, tk := range ents {
		tid, err := strconv.Atoi(tk.Name())
		if err != nil {
			continue
		}
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: policy}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
