package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/sharefs"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// SharedTag is the tag of the sandbox's shared directory, which QEMU
// serves over 9p.
const SharedTag = "lodge-shared"

// shareDir is the share's directory in a sandbox's state directory (see
// sharefs: empty on the host).
const shareDir = "share"

// ErrBoot reports a guest that did not come up.
var ErrBoot = errors.New("guest did not boot")

// ErrExists reports a sandbox id that is already in use.
var ErrExists = errors.New("sandbox already exists")

// Config describes a sandbox to create.
type Config struct {
	ID  string
	Dir string // state directory; must not exist yet
	// VM is the machine; its ID, StateDir, Channel and Shares are set here.
	VM          vmm.Config
	BootTimeout time.Duration
	// HostReserveMiB is host memory the VM may not count on (see
	// admitMemory).
	HostReserveMiB int
	// Templates, when set, lets the sandbox start as a clone of a template
	// (built on demand); a sandbox that cannot cold-boots.
	Templates *Templates
	// Layers, when set, lets containers whose root comes as image layers
	// (containerd's overlay snapshots) get it built in the guest from
	// erofs images of the layers (see layers.go).
	Layers *Layers
	// Seccomp, when set, compiles containers' seccomp profiles on the host
	// (see seccomp.go); without it, or where it fails, the guest does.
	Seccomp *SeccompCompiler
	// LateNetwork: the VM's one NIC (VM.NICs[0], with MAC TemplateSlotMAC)
	// is a tap in a network namespace whose interface appears only after
	// the sandbox started (an engine's OCI hook makes it: Docker), given
	// to the guest then with ConfigureNetwork; a lone container's new
	// network namespace is the VM's own.
	LateNetwork bool
}

// Deps are the drivers a sandbox uses.
type Deps struct {
	Driver vmm.Driver
	Log    *slog.Logger
}

// Sandbox is one running microVM.
type Sandbox struct {
	id     string
	dir    string
	log    *slog.Logger
	phases *phases
	vm     vmm.VM
	// hostMemory bounds what the VM may take of the host (hostMemoryOf).
	hostMemory int64
	share      *sharefs.Share
	agent      *agent.Client
	start      StartInfo
	layers     *Layers
	seccomp    *SeccompCompiler
	// lateNet: see Config.LateNetwork.
	lateNet bool

	mu         sync.Mutex // guards containers and seccompSent
	containers map[string]*Container
	// seccompSent: the keys of the host's seccomp programs this sandbox's
	// agent was given (hostSeccomp).
	seccompSent map[string]bool
}

// Create boots a sandbox. On error everything it made is gone.
func Create(ctx context.Context, deps Deps, cfg Config) (*Sandbox, error) {
	log := deps.Log.With("sandbox_id", cfg.ID)
	ph := newPhases(log)
	var cu rollback.Stack
	defer cu.Run()

	if err := admitMemory(cfg); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	if err := os.Mkdir(cfg.Dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: %s (state in %s)", ErrExists, cfg.ID, cfg.Dir)
		}
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	cu.Add(func() { os.RemoveAll(cfg.Dir) })
	ph.done(PhaseHostPrep)

	start := StartInfo{Path: StartCold, Reason: cloneBlocker(cfg)}
	if start.Reason == "" {
		sb, err := createClone(ctx, deps, cfg, log, ph)
		if err == nil {
			cu.Release()
			return sb, nil
		}
		if ctx.Err() != nil || errors.Is(err, netsetup.ErrSwapBroken) {
			return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
		}
		start.Reason = "the clone failed: " + err.Error()
		ph.mark()
		// A failed clone is the operator's to see (a full disk, a bad
		// template); a sandbox that cannot be cloned (an opt-out, a
		// device a clone cannot carry) is not.
		log.Warn("cold boot", "start", StartCold, "reason", start.Reason)
	} else {
		log.Info("cold boot", "start", StartCold, "reason", start.Reason)
	}

	share, err := sharefs.Start(ctx, filepath.Join(cfg.Dir, shareDir))
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	cu.Add(share.Stop)
	view, err := share.OpenView(ctx)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	defer view.Close() // QEMU keeps its copy

	vc := ColdConfig(cfg, vmm.Share9P{Tag: SharedTag, Dir: view})
	vm, err := deps.Driver.Start(ctx, vc)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	cu.Add(func() { vm.Shutdown(context.Background()) })
	log.Info("vm started", "vmm", "qemu", "pid", vm.Info().PID, "accel", vc.Accel)
	ph.done(PhaseVMMStart)

	client, err := connectAgent(ctx, vm, nil, cfg.BootTimeout)
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	v := client.Version()
	log.Info("agent ready", "agent_version", v.AgentVersion, "kernel", v.KernelRelease)
	if err := client.ForwardLogs(log); err != nil {
		log.Warn("guest log stream", "err", err)
	}
	if client.Has(agentv1.CapIdentify) {
		if err := identify(ctx, client, cfg.ID); err != nil {
			client.Close()
			return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
		}
	}
	ph.done(PhaseBoot)

	cu.Release()
	start.VCPUs, start.MemoryMiB = vc.VCPUs, vc.MemoryMiB
	s := &Sandbox{id: cfg.ID, dir: cfg.Dir, log: log, phases: ph, vm: vm, hostMemory: hostMemoryOf(vc), share: share, agent: client,
		start: start, layers: cfg.Layers, seccomp: cfg.Seccomp, lateNet: cfg.LateNetwork, containers: map[string]*Container{}}
	return s, nil
}

// HostOverheadMiB is host memory a VM takes beside its RAM: QEMU's own
// (device emulation, its 9p server, its heap, ~30 MB measured), the
// supervisor's or shim's, and under TCG the translated code, which QEMU
// lets grow to 1 GiB.
func HostOverheadMiB(accel vmm.Accel) int {
	if accel == vmm.AccelTCG {
		return 1024 + 256
	}
	return 256
}

// HostMemoryBytes bounds what the sandbox may take of the host's memory:
// its VM's RAM and HostOverheadMiB. A VM past it was not a guest using
// its memory but a host process misbehaving.
func (s *Sandbox) HostMemoryBytes() int64 { return s.hostMemory }

// hostMemoryOf is HostMemoryBytes of a VM vc: 0 (no bound) for one
// without a memory size.
func hostMemoryOf(vc vmm.Config) int64 {
	if vc.MemoryMiB == 0 {
		return 0
	}
	return int64(vc.MemoryMiB+HostOverheadMiB(vc.Accel)) << 20
}

// HostPrograms are the programs a sandbox runs on the host, by the start
// of their names (procid.Strays).
var HostPrograms = []string{"qemu-system-"}

// KillStrays ends the host programs of a sandbox (or template) whose state
// lives in dir but which no record names: their owner died between
// starting them and recording them. Their Pdeathsig covers every other
// case but one (see docs/security.md).
func KillStrays(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	procid.KillAll(ctx, procid.Strays(dir, HostPrograms...))
}

// ColdConfig is the VM of a cold-booted sandbox of cfg: cfg.VM with the
// sandbox's id and state directory, its agent channel and its share (the
// share's view, sharefs.Share.OpenView), which QEMU serves over 9p as a
// clone's.
func ColdConfig(cfg Config, share vmm.Share9P) vmm.Config {
	vc := cfg.VM
	vc.ID, vc.StateDir = cfg.ID, cfg.Dir
	if vc.Channel == "" {
		vc.Channel = vmm.ChannelSerial
	}
	if vc.Channel == vmm.ChannelVsock && vc.VsockCID == 0 {
		vc.VsockCID = newCID()
	}
	vc.Shares9P = []vmm.Share9P{share}
	return vc
}

// newCID picks a random guest context id; vhost-vsock refuses one in use
// and the VM start then fails, which a collision in 2^32 makes unlikely.
func newCID() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return 3 + binary.LittleEndian.Uint32(b[:])%(1<<31)
}

// connectAgent waits for the guest agent's handshake, or for the VM to die,
// or for the boot timeout; a failure says how far the boot got. conn is the
// agent channel if the caller dialled it already (nil: dial it now).
func connectAgent(ctx context.Context, vm vmm.VM, conn net.Conn, timeout time.Duration) (*agent.Client, error) {
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-vm.Done():
			cancel()
		case <-bctx.Done():
		}
	}()
	var err error
	if conn == nil {
		conn, err = vm.Dial(bctx)
	}
	if err == nil {
		var c *agent.Client
		if c, err = agent.Connect(bctx, conn); err == nil {
			return c, nil
		}
	}
	// A dying VM closes the channel a moment before QEMU is reaped.
	select {
	case <-vm.Done():
		return nil, fmt.Errorf("%w: qemu exited while the guest booted (%v); console:\n%s",
			ErrBoot, vm.Wait(context.Background()), consoleTail(vm.Info().Console, 15))
	case <-time.After(500 * time.Millisecond):
	}
	console := consoleTail(vm.Info().Console, 15)
	if errors.Is(bctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: the agent did not answer within %s (VMM running; raise vmm.boot_timeout on a slow host); console:\n%s",
			ErrBoot, timeout, console)
	}
	return nil, fmt.Errorf("%w: %w; console:\n%s", ErrBoot, err, console)
}

// GoneReason says why the VM ended under its containers: a guest kernel
// panic, with the console from the panic on, or QEMU's exit, with the
// console's last lines.
func (s *Sandbox) GoneReason(ctx context.Context) string {
	path := s.vm.Info().Console
	if b, err := os.ReadFile(path); err == nil {
		b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
		if i := bytes.LastIndex(b, []byte("Kernel panic")); i >= 0 {
			i = bytes.LastIndexByte(b[:i], '\n') + 1 // from the line's start
			lines := bytes.SplitN(b[i:], []byte("\n"), 13)
			if len(lines) > 12 {
				lines = lines[:12]
			}
			return "the guest kernel panicked; console:\n" + printable(bytes.TrimRight(bytes.Join(lines, []byte("\n")), "\n"))
		}
	}
	return fmt.Sprintf("the VM exited (qemu: %v); console:\n%s", s.vm.Wait(ctx), consoleTail(path, 10))
}

// consoleTail returns the last n lines of the guest console log.
func consoleTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no console log: " + err.Error() + ")"
	}
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := bytes.Join(lines, []byte("\n"))
	if len(bytes.TrimSpace(out)) == 0 {
		return "(console is empty: the kernel printed nothing)"
	}
	return printable(out)
}

// printable makes guest output safe to show on the user's terminal: the
// guest writes the console, and escape sequences must not reach the host's
// terminal.
func printable(b []byte) string {
	b = bytes.ToValidUTF8(b, []byte("?"))
	return string(bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || (r >= 0x20 && r != 0x7f && (r < 0x80 || r > 0x9f)) {
			return r
		}
		return '?'
	}, b))
}

// ID is the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// VMInfo describes the sandbox's VM.
func (s *Sandbox) VMInfo() vmm.Info { return s.vm.Info() }

// HostPIDs are the host processes the sandbox runs (QEMU, which serves
// its files too), so that an owner that dies can be cleaned up after.
func (s *Sandbox) HostPIDs() []int { return []int{s.vm.Info().PID} }

// Start says how the sandbox started: a clone of a template or a cold
// boot, and why.
func (s *Sandbox) Start() StartInfo { return s.start }

// AgentVersion is the guest agent's handshake reply.
func (s *Sandbox) AgentVersion() (agentVersion, kernel string) {
	v := s.agent.Version()
	return v.AgentVersion, v.KernelRelease
}

// ConfigureNetwork gives the guest its NICs' addresses and routes (see
// internal/netsetup for the host side).
//
// In a clone, or with LateNetwork, the NIC carries the slot MAC until the
// agent gives it the interface's.
func (s *Sandbox) ConfigureNetwork(ctx context.Context, req *agentv1.NetworkRequest) error {
	if s.start.Path == StartClone || s.lateNet {
		for _, in := range req.Interfaces {
			in.CurrentMac = TemplateSlotMAC
		}
	}
	if err := s.agent.ConfigureNetwork(ctx, req); err != nil {
		return fmt.Errorf("sandbox %s: configure the guest network: %w", s.id, err)
	}
	return nil
}

// DialPort connects to 127.0.0.1:port in the guest's network namespace.
func (s *Sandbox) DialPort(port uint16) (net.Conn, error) { return s.agent.DialPort(port) }

// Destroy stops the VM, detaches everything the share holds
// and removes the state directory. It is safe to call on a sandbox whose VM already died.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.phases.mark()
	s.mu.Lock()
	ctrs := s.containers
	s.containers = map[string]*Container{}
	s.mu.Unlock()
	var errs []error
	for _, c := range ctrs {
		if c.keepsWritable {
			// The guest writes back what the container wrote and
			// unmounts it: its writable layer is used again.
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := s.agent.Delete(dctx, c.id); err != nil {
				s.log.Warn("flush the container's writable layer: what it wrote last may be lost", "container_id", c.id, "err", err)
			}
			cancel()
		}
		errs = append(errs, c.unmount(ctx))
	}
	s.agent.Close()
	errs = append(errs, s.vm.Shutdown(ctx))
	s.share.Stop() // ends the share's namespace: nothing stays attached
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sandbox %s: destroy: %w (state kept in %s)", s.id, err, s.dir)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("sandbox %s: remove state: %w", s.id, err)
	}
	s.phases.done(PhaseTeardown)
	return nil
}
