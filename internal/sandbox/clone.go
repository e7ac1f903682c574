package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/pool"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/sharefs"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// How a sandbox started (StartInfo.Path).
const (
	StartClone = "clone" // restored from a template
	StartCold  = "cold"  // booted a kernel
)

// StartInfo says how a sandbox started and, for a cold boot, why.
type StartInfo struct {
	Path     string
	Reason   string // why it cold-booted
	Template string // the template's key, for a clone
	Pooled   bool   // a clone restored before it was asked for (Templates.Pool)
	// VCPUs and MemoryMiB are the VM's (a clone's are its template's
	// shape: the sandbox's rounded up to a size class).
	VCPUs, MemoryMiB int
}

// Templates is where a sandbox's clone comes from.
type Templates struct {
	Store   *template.Store
	Classes template.Classes
	// Inputs identify the guest (kernel, initrd, QEMU, host facts); the
	// sandbox adds the device layout.
	Inputs template.Inputs
	// OptOut, when set, is why this sandbox must cold-boot (e.g. the
	// io.lodge.template=false annotation).
	OptOut string
	// Pool, when set, holds clones restored ahead ([template] pool = N):
	// a sandbox takes one if one is ready, and Refill (set with Pool) is
	// asked to start a keeper for each free slot of the template's pool.
	Pool   *pool.Pool
	Refill func(shape template.Shape, key string)
}

// templateLayout names the device layout of templates and clones: the
// serial console, one virtio-serial port for the agent, one NIC slot, one
// 9p slot for the share. A change of layout must change this string (the
// devices the VMM driver gives every guest, such as the balloon, are in
// qemu.GuestFact).
const templateLayout = "layout=serial,virtio-serial,net:" + TemplateSlotMAC + ",9p:" + SharedTag

// TemplateSlotMAC is the MAC of a template's NIC slot; a clone's agent
// gives the NIC the pod interface's MAC (NetworkInterface.current_mac).
const TemplateSlotMAC = "02:4c:4f:44:47:00"

// templatePreload is what a template loads before its snapshot, so that
// no clone pays for it (9p for the share every guest loads at boot):
// virtio_net for the NIC slot (it
// probes the slot's NIC in the template; a clone's agent renames it and
// gives it its pod's MAC, or leaves it down); loop, erofs, overlay and
// ext4 for roots built from layer images.
const templatePreload = "lodge.preload=virtio_net,crc32c_generic,loop,erofs,overlay,ext4"

// cloneRestoreTimeout bounds a clone's restore and its agent's answer; a
// clone answers in about a second under TCG, a cold boot is the fallback.
const cloneRestoreTimeout = 30 * time.Second

// cloneBlocker says why cfg cannot be served by a clone ("" if it can).
func cloneBlocker(cfg Config) string {
	t := cfg.Templates
	switch {
	case t == nil || t.Store == nil:
		return "templates are disabled ([template] enabled = false)"
	case t.OptOut != "":
		return t.OptOut
	case len(cfg.VM.NICs) > 1:
		return fmt.Sprintf("the sandbox has %d network interfaces; templates carry one", len(cfg.VM.NICs))
	case cfg.VM.Channel == vmm.ChannelVsock:
		return "the agent channel is vsock, whose guest CID a clone cannot change"
	}
	if _, ok := t.Classes.Round(cfg.VM.VCPUs, cfg.VM.MemoryMiB); !ok {
		return fmt.Sprintf("%d vCPUs / %d MiB is larger than every template size class", cfg.VM.VCPUs, cfg.VM.MemoryMiB)
	}
	return ""
}

// templateInputs are the sandbox's Inputs plus what the sandbox itself
// decides of the template VM.
func templateInputs(cfg Config) template.Inputs {
	in := cfg.Templates.Inputs
	in.Facts = append(append([]string{}, in.Facts...), templateLayout, "accel="+string(cfg.VM.Accel),
		fmt.Sprintf("kernel_args=%q", append(append([]string{}, cfg.VM.KernelArgs...), templatePreload)))
	return in
}

// createClone starts the sandbox's VM as a clone of its shape's template,
// building the template first if there is none. On error nothing it made
// is left (the state directory is the caller's).
func createClone(ctx context.Context, deps Deps, cfg Config, log *slog.Logger, ph *phases) (*Sandbox, error) {
	src := cfg.Templates
	t, err := EnsureTemplate(ctx, deps, cfg)
	if err != nil {
		return nil, err
	}
	if src.Pool != nil {
		sb, err := claimClone(ctx, deps, cfg, t, log, ph)
		if src.Refill != nil && src.Pool.Free(t.Meta.Key) > 0 {
			src.Refill(t.Meta.Shape, t.Meta.Key)
		}
		if sb != nil || errors.Is(err, netsetup.ErrSwapBroken) {
			return sb, err
		}
		if err != nil {
			log.Warn("a pooled clone failed: restoring one", "err", err)
		}
	}
	var cu rollback.Stack
	defer cu.Run()

	share, err := sharefs.Start(ctx, filepath.Join(cfg.Dir, shareDir))
	if err != nil {
		return nil, err
	}
	cu.Add(share.Stop)
	view, err := share.OpenView(ctx)
	if err != nil {
		return nil, err
	}
	defer view.Close()
	state, err := os.Open(t.State())
	if err != nil {
		return nil, err
	}
	defer state.Close()

	vc, closeSlot, err := CloneConfig(cfg.VM, t, vmm.Share9P{Tag: SharedTag, Dir: view})
	if err != nil {
		return nil, err
	}
	defer closeSlot() // QEMU keeps its copy
	vc.ID, vc.StateDir = cfg.ID, cfg.Dir
	vm, err := deps.Driver.Start(ctx, vc)
	if err != nil {
		return nil, err
	}
	cu.Add(func() { vm.Shutdown(context.Background()) })
	ph.done(PhaseVMMStart)

	restorer, ok := vm.(vmm.Restorer)
	if !ok {
		return nil, errors.New("the VMM driver cannot restore a template")
	}
	rctx, cancel := context.WithTimeout(ctx, cloneRestoreTimeout)
	defer cancel()
	// The channel is connected before the devices load: the template's
	// agent was parked with its host connected (buildTemplate), and a
	// channel found disconnected would end the parked synchronisation.
	conn, err := vm.Dial(rctx)
	if err != nil {
		return nil, err
	}
	cu.Add(func() { conn.Close() })
	if err := restorer.Restore(rctx, state); err != nil {
		if ctx.Err() == nil {
			src.Store.Invalidate(t, err)
		}
		return nil, err
	}
	restored := time.Now()
	client, err := connectAgent(rctx, vm, conn, cloneRestoreTimeout)
	if err != nil {
		if ctx.Err() == nil {
			src.Store.Invalidate(t, err)
		}
		return nil, err
	}
	cu.Add(func() { client.Close() })
	connected := time.Since(restored)
	if err := identify(rctx, client, cfg.ID); err != nil {
		return nil, err
	}
	log.Debug("clone's agent answered", "connect", connected.Round(time.Millisecond),
		"identify", (time.Since(restored) - connected).Round(time.Millisecond))
	if err := client.ForwardLogs(log); err != nil {
		log.Warn("guest log stream", "err", err)
	}
	ph.done(PhaseRestore)
	log.Info("vm started", "vmm", "qemu", "pid", vm.Info().PID, "accel", vc.Accel, "start", StartClone,
		"template", t.Meta.Key)
	cu.Release()
	return &Sandbox{id: cfg.ID, dir: cfg.Dir, log: log, phases: ph, vm: vm, hostMemory: hostMemoryOf(vc), share: share, agent: client,
		start: StartInfo{Path: StartClone, Template: t.Meta.Key, VCPUs: vc.VCPUs, MemoryMiB: vc.MemoryMiB}, layers: cfg.Layers, seccomp: cfg.Seccomp, lateNet: cfg.LateNetwork, containers: map[string]*Container{}}, nil
}

// templateVM is what a template VM and its clones share: the shape, the
// kernel command line and the device layout (templateLayout). share serves
// the 9p slot. The NIC slot is base's one NIC, or else a placeholder tap
// that reaches nothing; closeSlot closes the placeholder, once the VMM holds
// its copy.
func templateVM(base vmm.Config, shape template.Shape, share vmm.Share9P) (vc vmm.Config, closeSlot func(), err error) {
	vc = base
	vc.VCPUs, vc.MemoryMiB = shape.VCPUs, shape.MemoryMiB
	vc.KernelArgs = append(append([]string{}, base.KernelArgs...), templatePreload)
	vc.Shares9P = []vmm.Share9P{share}
	closeSlot = func() {}
	if len(vc.NICs) == 0 {
		tap, err := netsetup.PlaceholderTap()
		if err != nil {
			return vc, nil, err
		}
		vc.NICs = []vmm.NIC{{Tap: tap, MAC: TemplateSlotMAC}}
		closeSlot = func() { tap.Close() }
	}
	return vc, closeSlot, nil
}

// templateBuildConfig is the template VM itself, built in dir: its RAM in
// dir's memory file, shared; its NIC slot a placeholder, never the NIC of
// the sandbox whose start builds the template.
func templateBuildConfig(base vmm.Config, shape template.Shape, dir string) (vmm.Config, func(), error) {
	base.NICs = nil
	vc, closeSlot, err := templateVM(base, shape, vmm.Share9P{Tag: SharedTag, Path: filepath.Join(dir, template.EmptyDir), Placeholder: true})
	vc.ID, vc.StateDir = "template-"+shape.String(), dir
	vc.Memory = vmm.Memory{File: filepath.Join(dir, template.MemoryFile), Shared: true}
	return vc, closeSlot, err
}

// CloneConfig is the VM of a clone of t: base's accelerator and channel,
// the template's shape and devices (see templateVM), RAM from its memory
// file mapped privately, started to receive its device state (Restorer).
// The caller sets the VM's ID and StateDir.
func CloneConfig(base vmm.Config, t *template.Template, share vmm.Share9P) (vmm.Config, func(), error) {
	vc, closeSlot, err := templateVM(base, t.Meta.Shape, share)
	vc.Memory, vc.Incoming = vmm.Memory{File: t.Memory(), Mergeable: base.Memory.Mergeable}, true
	return vc, closeSlot, err
}

// EnsureTemplate returns the template a sandbox of cfg clones, building it
// (once, under its lock) when there is none.
func EnsureTemplate(ctx context.Context, deps Deps, cfg Config) (*template.Template, error) {
	if why := cloneBlocker(cfg); why != "" {
		return nil, errors.New(why)
	}
	shape, _ := cfg.Templates.Classes.Round(cfg.VM.VCPUs, cfg.VM.MemoryMiB)
	return cfg.Templates.Store.Get(ctx, shape, templateInputs(cfg), func(ctx context.Context, dir string) error {
		return buildTemplate(ctx, deps, cfg, shape, dir)
	})
}

// buildTemplate boots a template VM in dir and saves it: RAM in dir's
// memory file, device state in its state file. The template VM is never
// resumed: it is stopped for the snapshot and then ended.
func buildTemplate(ctx context.Context, deps Deps, cfg Config, shape template.Shape, dir string) (err error) {
	// The memory file is written through a shared mapping: on a full
	// file system QEMU dies of SIGBUS, which says nothing to a user.
	// Ask first for room for what a guest of this shape fills before its
	// snapshot (TemplateSpace), and name a full disk if the build fails
	// anyway.
	if err := TemplateSpace(filepath.Dir(dir), shape.MemoryMiB); err != nil {
		return err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			if serr := TemplateSpace(filepath.Dir(dir), shape.MemoryMiB); serr != nil {
				err = fmt.Errorf("%w (%v)", err, serr)
			}
		}
	}()
	// The NIC slot's placeholder is a tap like a pod's (vnet header and
	// all), so that the features the guest's driver negotiates here hold
	// for a clone's tap.
	vc, closeSlot, err := templateBuildConfig(cfg.VM, shape, dir)
	if err != nil {
		return err
	}
	defer closeSlot()
	vm, err := deps.Driver.Start(ctx, vc)
	if err != nil {
		return err
	}
	defer func() {
		vm.Shutdown(context.Background())
		for _, f := range []string{"qemu.log", "console.log"} {
			os.Remove(filepath.Join(dir, f))
		}
	}()
	client, err := connectAgent(ctx, vm, nil, cfg.BootTimeout)
	if err != nil {
		return err
	}
	// The template's session ends here. Its agent is then parked: synchronised
	// on a new connection that is never started (transport.HostPark) and
	// stays connected through the snapshot, so that a clone's agent answers
	// its host's first HELLO (transport.HostSync) rather than first ending
	// a session.
	client.Close()
	park, err := vm.Dial(ctx)
	if err != nil {
		return err
	}
	defer park.Close()
	pctx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	if err := transport.HostPark(pctx, park); err != nil {
		return fmt.Errorf("park the template's agent: %w", err)
	}
	snap, ok := vm.(vmm.Snapshotter)
	if !ok {
		return errors.New("the VMM driver cannot snapshot a VM")
	}
	f, err := os.OpenFile(filepath.Join(dir, template.StateFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o400)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := snap.Snapshot(ctx, f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil { // a full disk shows here
		return fmt.Errorf("write device state: %w", err)
	}
	return nil
}

// templateStateSlack: room for a template's device state and QEMU's log
// beside its memory file.
const templateStateSlack = 8 << 20

// errNoSpace: the template directory's file system has no room for a
// template of the shape asked for.
var errNoSpace = errors.New("no space for a template")

// TemplateSpace says whether dir's file system has room for a template
// of a guest of memoryMiB. The memory file is sparse: it takes what the
// guest touched before its snapshot, measured here at 124, 148 and 290 MiB
// for guests of 256, 1024 and 4096 MiB (the kernel's page map grows with
// memory). Asked for: up to 256 MiB plus 1/16 of the memory, and the
// device state; all of the memory would refuse large shapes on a small
// /run that holds them well.
func TemplateSpace(dir string, memoryMiB int) error {
	need := int64(min(memoryMiB, 256))<<20 + int64(memoryMiB)<<20/16 + templateStateSlack
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("template directory %s: %w", dir, err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Errorf("%w: the template directory's file system (%s) has %d MiB free, a template of %d MiB of guest memory needs about %d MiB: free space there or set [template] dir",
			errNoSpace, dir, free>>20, memoryMiB, need>>20)
	}
	return nil
}

// identify gives a new guest its own RNG seed, clock, machine id and
// hostname before anything runs in it.
func identify(ctx context.Context, c *agent.Client, id string) error {
	seed := make([]byte, 64)
	mid := make([]byte, 16)
	rand.Read(seed)
	rand.Read(mid)
	h := sha256.Sum256([]byte(id))
	err := c.Identify(ctx, &agentv1.IdentifyRequest{Seed: seed, TimeUnixNano: time.Now().UnixNano(),
		MachineId: hex.EncodeToString(mid), Hostname: "lodge-" + hex.EncodeToString(h[:4])})
	if err != nil {
		return fmt.Errorf("give the guest its identity: %w", err)
	}
	return nil
}
