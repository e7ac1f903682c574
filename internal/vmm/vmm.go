// Package vmm defines what Lodge needs from a virtual machine monitor: a
// complete, declarative VM description (Config) handed to a Driver, and the
// small VM handle it returns. Drivers live in subpackages (vmm/qemu); this
// package holds no implementation.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Accel is the CPU accelerator a VM runs with.
type Accel string

// Accelerators.
const (
	AccelKVM Accel = "kvm" // hardware virtualisation through /dev/kvm
	AccelTCG Accel = "tcg" // QEMU's software emulation: slow, works anywhere
)

// AgentChannel says how the host reaches the guest agent.
type AgentChannel string

// Agent channels.
const (
	// ChannelSerial is a virtio-serial port backed by a unix socket.
	ChannelSerial AgentChannel = "virtio-serial"
	// ChannelVsock is AF_VSOCK through /dev/vhost-vsock.
	ChannelVsock AgentChannel = "vsock"
)

// Share9P is a virtio-9p device served by the VMM itself (so it works in a
// clone, whose RAM no other process can map). The VMM serves Dir (an open
// directory, passed to it) or, when Dir is nil, Path.
type Share9P struct {
	Tag  string
	Path string
	Dir  *os.File // the caller keeps ownership; the VMM gets a copy
	// Placeholder: an empty directory, readable by all, that holds a
	// template's device slot; the guest never uses it, so the VMM needs
	// no capability to serve it.
	Placeholder bool
}

// Memory says how guest RAM is backed. The zero value is private
// anonymous memory (a cold boot's).
type Memory struct {
	// File backs guest RAM with this file: a template's memory (Shared:
	// the guest's writes reach the file) or a clone's (private: the clone's
	// writes stay in its own copy-on-write pages).
	File   string
	Shared bool
	// Mergeable offers guest RAM to the host's KSM (QEMU's mem-merge)
	// where it can be merged at all: see Merged.
	Mergeable bool
}

// Merged says whether the host's KSM may merge guest RAM: only a private
// mapping of a template's file (a clone's) is, never shared memory (a
// template's file being built) nor a cold boot's RAM: a sandbox that opts out of templates shares no page.
func (m Memory) Merged() bool { return m.Mergeable && m.File != "" && !m.Shared }

// NIC is a virtio-net device backed by an open tap queue.
type NIC struct {
	Tap *os.File // the caller keeps ownership; the VMM gets a copy
	MAC string   // aa:bb:cc:dd:ee:ff
}

// Config describes one VM completely, before it boots.
type Config struct {
	ID       string
	StateDir string // sockets and the console log live here
	Kernel   string
	Initrd   string
	// KernelArgs are appended to the driver's own command line.
	KernelArgs []string
	VCPUs      int
	MemoryMiB  int
	Accel      Accel
	Channel    AgentChannel
	// VsockCID is the guest's context id when Channel is ChannelVsock.
	VsockCID uint32
	// Shares9P come after the NICs in the device layout.
	Shares9P []Share9P
	NICs     []NIC
	Memory   Memory
	// Incoming starts the VM paused, waiting for a device state to
	// restore (see Restorer).
	Incoming bool
}

// Validate checks that the config describes a VM a driver can start.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("no VM id"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("no state directory"))
	}
	if c.Kernel == "" || c.Initrd == "" {
		errs = append(errs, errors.New("kernel and initrd are required"))
	}
	if c.VCPUs < 1 || c.VCPUs > 255 {
		errs = append(errs, fmt.Errorf("vcpus %d out of range 1..255", c.VCPUs))
	}
	if c.MemoryMiB < 64 {
		errs = append(errs, fmt.Errorf("memory %d MiB is below the 64 MiB minimum", c.MemoryMiB))
	}
	if c.Accel != AccelKVM && c.Accel != AccelTCG {
		errs = append(errs, fmt.Errorf("unknown accelerator %q", c.Accel))
	}
	for _, s := range c.Shares9P {
		if s.Tag == "" || (s.Path == "") == (s.Dir == nil) {
			errs = append(errs, fmt.Errorf("9p share %q: needs a tag and a path or a directory", s.Tag))
		}
	}
	if c.Memory.File == "" && c.Incoming {
		errs = append(errs, errors.New("a restored VM needs its template's memory file"))
	}
	for _, n := range c.NICs {
		if _, err := net.ParseMAC(n.MAC); err != nil || n.Tap == nil {
			errs = append(errs, fmt.Errorf("NIC %q: needs a tap and a MAC", n.MAC))
		}
	}
	switch c.Channel {
	case ChannelSerial:
	case ChannelVsock:
		if c.VsockCID < 3 {
			errs = append(errs, fmt.Errorf("vsock cid %d is reserved", c.VsockCID))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown agent channel %q", c.Channel))
	}
	return errors.Join(errs...)
}

// Info describes a running VM.
type Info struct {
	PID     int
	Accel   Accel
	Console string // path of the guest console log
	Started time.Time
}

// Driver starts VMs.
type Driver interface {
	// Start boots a VM. It returns once the VMM runs; the guest may still
	// be booting. On error nothing the call created is left behind.
	Start(ctx context.Context, cfg Config) (VM, error)
}

// VM is a running virtual machine.
type VM interface {
	// Dial connects to the guest agent's byte stream.
	Dial(ctx context.Context) (net.Conn, error)
	// Shutdown stops the VM (gracefully if it can, then by force) and
	// releases everything the driver created for it.
	Shutdown(ctx context.Context) error
	// Wait blocks until the VMM process has exited and returns why.
	Wait(ctx context.Context) error
	// Done is closed when the VMM process has exited.
	Done() <-chan struct{}
	Info() Info
}

// Snapshotter is a VM that can save its device state for clones: the VM
// stops for good, its RAM stays in the file of Config.Memory (shared), and
// the device state goes to w. Found by type assertion on a VM.
type Snapshotter interface {
	Snapshot(ctx context.Context, w *os.File) error
}

// Restorer is a VM started with Config.Incoming: Restore loads the device
// state saved by Snapshot (RAM comes from the template's memory file,
// mapped privately) and resumes the guest.
type Restorer interface {
	Restore(ctx context.Context, r *os.File) error
}

// ErrExited reports a VMM that exited on its own.
var ErrExited = errors.New("vmm exited")

// Pauser is a VM whose guest can be stopped and resumed, and whose monitor
// its owner can let go of so that another process adopts the VM (a pooled
// clone waits stopped until a sandbox adopts it: see Adopter).
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// ReleaseMonitor closes the owner's monitor connection; Shutdown can
	// then only kill the VM.
	ReleaseMonitor()
}

// Adopted describes a running VM that another process started and still
// parents (a pooled clone's keeper).
type Adopted struct {
	ID       string
	PID      int
	StateDir string // where the VM's sockets and console log are
	Accel    Accel
	Started  time.Time
}

// Adopter is a Driver that can take over a VM another process started:
// the VM is watched, stopped and killed through its process descriptor,
// driven through its monitor socket.
type Adopter interface {
	Adopt(ctx context.Context, a Adopted) (VM, error)
}
