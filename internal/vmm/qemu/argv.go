package qemu

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// File descriptors the driver hands to QEMU (cmd.ExtraFiles order).
const (
	fdQMP   = 3 // listening unix socket for the QMP monitor
	fdAgent = 4 // listening unix socket behind the agent's virtio-serial port
)

// firstNICFD is the descriptor of the first NIC's tap: NICs follow the
// listening sockets.
func firstNICFD(cfg vmm.Config) int {
	if cfg.Channel == vmm.ChannelSerial {
		return fdAgent + 1
	}
	return fdQMP + 1
}

// first9PFD is the descriptor of the first 9p share's directory: 9p
// shares follow the NICs.
func first9PFD(cfg vmm.Config) int {
	return firstNICFD(cfg) + len(cfg.NICs)
}

// vsockFD is the descriptor of /dev/vhost-vsock, opened by the driver (so
// that QEMU, which may run as a user of its own, needs no access to the
// device node): it follows the 9p directories.
func vsockFD(cfg vmm.Config) int {
	n := first9PFD(cfg)
	for _, s := range cfg.Shares9P {
		if s.Dir != nil {
			n++
		}
	}
	return n
}

// Host carries the facts about the host that the command line depends on.
type Host struct {
	// TSCkHz is the host TSC frequency; required under TCG.
	TSCkHz uint64
}

// baseKernelArgs apply to every boot: serial console for the log, no
// reboot loop on panic, and options the lab measured to save 0.2-0.3 s.
var baseKernelArgs = []string{
	"console=ttyS0", "quiet", "panic=-1", "pci=off",
	"no_timer_check", "i8042.noaux", "i8042.nokbd", "i8042.nopnp",
	"cryptomgr.notests", "random.trust_cpu=on", "audit=0", "nowatchdog",
	"rcupdate.rcu_expedited=1",
}

// tcgKernelArgs apply under TCG, beside the measured TSC rate: TCG
// executes no speculation, so CPU-bug mitigations only cost time.
var tcgKernelArgs = []string{"tsc=reliable", "mitigations=off"}

// guestDevices are the devices every guest gets whatever its config: a
// balloon through which the guest reports the pages it frees, and QEMU
// gives them back to the host (for a clone, its private copies of template
// pages it wrote and freed since; docs/architecture.md, "Memory a guest
// gives back"). It is never inflated.
var guestDevices = []string{"virtio-balloon-device,free-page-reporting=on"}

// machine is every guest's -M. The RTC stays (without it the guest boots
// far slower under TCG: ../shared/lab). The i8254 PIT goes: the guest
// keeps time with the TSC and its local APIC timer and never uses the PIT,
// but QEMU resets the PIT's channel 0 to a square wave whose every edge,
// 36 times a second, woke QEMU's main loop for nothing; that was most of
// an idle VM's host CPU under TCG (docs/performance.md). Under KVM it
// removes the in-kernel PIT as well.
const machine = "microvm,memory-backend=mem,rtc=on,pit=off"

// GuestFact names what this driver gives every guest of an accelerator
// beside its files, shape and configured devices: the machine, the CPU model, the
// kernel arguments (all but the host's TSC rate, which is a fact of the
// host's boot) and guestDevices. A template is made with them, so a change
// of any must make a new template.
func GuestFact(accel vmm.Accel) string {
	args := append([]string{}, baseKernelArgs...)
	if accel == vmm.AccelTCG {
		args = append(args, tcgKernelArgs...)
	}
	return "driver_guest=machine=" + machine + " cpu=" + cpuModel(accel) + " devices=" + strings.Join(guestDevices, ";") +
		" args=" + strings.Join(args, " ")
}

// cpuModel is a guest's -cpu. Under KVM the host's CPU. Under TCG QEMU's
// "max" without ERMS: QEMU 7.2's TCG runs a rep-prefixed string
// instruction one element per pass through its translated-block dispatch,
// and with ERMS advertised the guest kernel (clear_page, copies to and from
// user memory) and glibc use rep movsb/stosb, a byte per pass, where they
// would otherwise use rep movsq/stosq, 8 bytes per pass: a guest's
// fork+exec takes less than half the time without it (docs/performance.md).
// The guest kernel picks its routines at boot, so a clone keeps its
// template's choice: GuestFact carries the model into the template key.
func cpuModel(accel vmm.Accel) string {
	if accel == vmm.AccelKVM {
		return "host"
	}
	return "max,erms=off"
}

// KernelCmdline returns the guest kernel command line.
func KernelCmdline(cfg vmm.Config, host Host) (string, error) {
	args := append([]string{}, baseKernelArgs...)
	if cfg.Accel == vmm.AccelTCG {
		if host.TSCkHz == 0 {
			return "", fmt.Errorf("qemu: TCG on microvm needs the host TSC frequency")
		}
		args = append(args, "tsc_early_khz="+strconv.FormatUint(host.TSCkHz, 10))
		args = append(args, tcgKernelArgs...)
	}
	args = append(args, "lodge.channel="+string(cfg.Channel))
	for _, a := range cfg.KernelArgs {
		if strings.ContainsAny(a, " \t\n\"") {
			return "", fmt.Errorf("qemu: kernel argument %q contains spaces or quotes", a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " "), nil
}

// Argv builds QEMU's command line (without the binary). It is a pure
// function of its inputs.
func Argv(cfg vmm.Config, host Host) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	// What reaches an option string of QEMU's (name=value,name=value)
	// must not carry a comma that would start an option of its own.
	if !transport.ValidID(cfg.ID) {
		return nil, fmt.Errorf("qemu: VM id %q: want letters, digits and . _ + - only", cfg.ID)
	}
	if strings.Contains(cfg.Memory.File, ",") {
		return nil, fmt.Errorf("qemu: memory file %q contains a comma", cfg.Memory.File)
	}
	if strings.Contains(cfg.StateDir, ",") {
		return nil, fmt.Errorf("qemu: state directory %q contains a comma", cfg.StateDir)
	}
	cmdline, err := KernelCmdline(cfg, host)
	if err != nil {
		return nil, err
	}
	mem := strconv.Itoa(cfg.MemoryMiB) + "M"
	a := []string{
		// Threads named for what they run ("CPU 0/TCG", "CPU 0/KVM"), so
		// that top -H and bench/host-cpu.sh tell the guest's CPU apart.
		"-name", "lodge-" + cfg.ID + ",debug-threads=on",
		"-M", machine + ",mem-merge=" + onOff(cfg.Memory.Merged()),
		"-global", "virtio-mmio.force-legacy=false",
		"-accel", string(cfg.Accel),
		"-cpu", cpuModel(cfg.Accel),
		"-smp", strconv.Itoa(cfg.VCPUs),
		"-m", mem,
		"-object", memoryBackend(cfg.Memory, mem),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", cmdline,
		"-serial", "file:" + filepath.Join(cfg.StateDir, ConsoleLog),
		"-chardev", "socket,id=qmp,fd=" + strconv.Itoa(fdQMP) + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	}
	switch cfg.Channel {
	case vmm.ChannelSerial:
		a = append(a,
			"-device", "virtio-serial-device,max_ports=2",
			"-chardev", "socket,id=agent,fd="+strconv.Itoa(fdAgent)+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+transport.AgentPortName,
		)
	case vmm.ChannelVsock:
		a = append(a, "-device", "vhost-vsock-device,guest-cid="+strconv.FormatUint(uint64(cfg.VsockCID), 10)+
			",vhostfd="+strconv.Itoa(vsockFD(cfg)))
	}
	for i, n := range cfg.NICs {
		mac, err := net.ParseMAC(n.MAC)
		if err != nil {
			return nil, fmt.Errorf("qemu: NIC %d: %w", i, err)
		}
		id := "net" + strconv.Itoa(i)
		a = append(a,
			"-netdev", "tap,id="+id+",fd="+strconv.Itoa(firstNICFD(cfg)+i),
			"-device", "virtio-net-device,netdev="+id+",mac="+mac.String(),
		)
	}
	for i, s := range cfg.Shares9P {
		if !transport.ValidID(s.Tag) || strings.ContainsAny(s.Path, ",") {
			return nil, fmt.Errorf("qemu: invalid 9p share %q", s.Tag)
		}
		path := s.Path
		if s.Dir != nil {
			path = "/proc/self/fd/" + strconv.Itoa(first9PFD(cfg)+i)
		}
		id := "p9" + strconv.Itoa(i)
		// passthrough: files keep their real owners and modes (the mapped
		// models turn host symlinks into files); QEMU
		// runs under confine's filter, so no setuid bit, device node or
		// xattr reaches a host file. remap: the share spans several host
		// filesystems, whose inode numbers may collide.
		a = append(a,
			"-fsdev", "local,id="+id+",path="+path+",security_model=passthrough,multidevs=remap",
			"-device", "virtio-9p-device,fsdev="+id+",mount_tag="+s.Tag,
		)
	}
	for _, d := range guestDevices {
		a = append(a, "-device", d)
	}
	if cfg.Incoming {
		a = append(a, "-incoming", "defer")
	}
	return a, nil
}

// memoryBackend is guest RAM: private anonymous memory (a cold boot's),
// or a template's file, shared by the template and private in a clone.
func memoryBackend(m vmm.Memory, size string) string {
	if m.File == "" {
		return "memory-backend-ram,id=mem,size=" + size
	}
	share := "off"
	if m.Shared {
		share = "on"
	}
	return "memory-backend-file,id=mem,size=" + size + ",mem-path=" + m.File + ",share=" + share
}

// onOff is a QEMU boolean property's value.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// Files in a VM's state directory.
const (
	ConsoleLog  = "console.log"
	QMPSocket   = "qmp.sock"
	AgentSocket = "agent.sock"
)
