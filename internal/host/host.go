// Package host turns Lodge's configuration into working drivers for this
// machine: it finds QEMU, the guest kernel and initrd, picks the
// accelerator (KVM when usable, else TCG, and says why) and reads the
// host's TSC frequency. Every missing piece is reported with what to do.
package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/guestimage"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/state"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/uidlease"
	"github.com/lodgeruntime/lodge/internal/vmm"
	"github.com/lodgeruntime/lodge/internal/vmm/qemu"
)

// ErrMissing reports a host requirement that is not met.
var ErrMissing = errors.New("host requirement missing")

// Accel is the accelerator choice and the reason for it.
type Accel struct {
	Accel  vmm.Accel
	Reason string
}

// kvmVerdictFile records a KVM boot probe's result (see ProbeKVM).
const kvmVerdictFile = "kvm-verdict.json"

// FindROFile finds lodge-qemu-rofile.so (qemu.Driver.ROFile) beside the
// running binary (`make build` puts it in bin/) or in /usr/local/lib/lodge
// or /usr/lib/lodge; "" if none has it.
func FindROFile() string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range append(dirs, "/usr/local/lib/lodge", "/usr/lib/lodge") {
		p := filepath.Join(d, qemu.ROFileName)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// UIDLeaseDir holds the lock files of the users QEMUs run as.
const UIDLeaseDir = "/run/lodge/uids"

// SeccompCacheDir holds the seccomp programs the host compiled, one file
// per profile and helper (sandbox.SeccompCompiler).
const SeccompCacheDir = "/run/lodge/seccomp"

// KVMVerdict is the outcome of booting a guest with KVM on this host boot.
type KVMVerdict struct {
	BootID string    `json:"boot_id"`
	Usable bool      `json:"usable"`
	Reason string    `json:"reason,omitempty"`
	When   time.Time `json:"when"`
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

// ReadKVMVerdict returns the verdict recorded on this host boot, if any.
func ReadKVMVerdict(guestDir string) (KVMVerdict, bool) {
	b, err := os.ReadFile(filepath.Join(guestDir, kvmVerdictFile))
	if err != nil {
		return KVMVerdict{}, false
	}
	var v KVMVerdict
	if json.Unmarshal(b, &v) != nil || v.BootID != bootID() {
		return KVMVerdict{}, false
	}
	return v, true
}

// WriteKVMVerdict records a probe's result for this host boot.
func WriteKVMVerdict(guestDir string, usable bool, reason string) error {
	b, _ := json.MarshalIndent(KVMVerdict{BootID: bootID(), Usable: usable, Reason: reason, When: time.Now().UTC()}, "", "  ")
	return os.WriteFile(filepath.Join(guestDir, kvmVerdictFile), append(b, '\n'), 0o644)
}

// tscFile caches the host's TSC rate for one host boot: where the kernel
// does not publish it, measuring it takes 50 ms and jitters by a few kHz,
// and every sandbox start would pay for it.
const tscFile = "/run/lodge/tsc.json"

// hostTSCkHz returns the host's TSC rate, measured once per host boot.
func hostTSCkHz() (uint64, error) {
	var c struct {
		BootID string `json:"boot_id"`
		KHz    uint64 `json:"khz"`
	}
	if state.Read(tscFile, &c) == nil && c.BootID == bootID() && c.KHz > 0 {
		return c.KHz, nil
	}
	khz, err := qemu.HostTSCkHz()
	if err != nil {
		return 0, err
	}
	c.BootID, c.KHz = bootID(), khz
	if os.MkdirAll(filepath.Dir(tscFile), 0o755) == nil {
		state.Write(tscFile, c) // best effort: the next start measures again
	}
	return khz, nil
}

// ChooseAccel resolves the configured accelerator.
func ChooseAccel(cfg config.Config) (Accel, error) {
	switch cfg.VMM.Accel {
	case "tcg":
		return Accel{vmm.AccelTCG, "vmm.accel = \"tcg\" in the config"}, nil
	case "kvm":
		if err := qemu.CheckKVM(); err != nil {
			return Accel{}, fmt.Errorf("%w: vmm.accel is \"kvm\" but %w", ErrMissing, err)
		}
		return Accel{vmm.AccelKVM, "vmm.accel = \"kvm\" in the config"}, nil
	}
	if err := qemu.CheckKVM(); err != nil {
		return Accel{vmm.AccelTCG, err.Error() + ": falling back to TCG, expect slow boots"}, nil
	}
	if v, ok := ReadKVMVerdict(cfg.Guest.Dir); ok && !v.Usable {
		return Accel{vmm.AccelTCG, "/dev/kvm works but a KVM guest failed to boot on this host (" + v.Reason +
			"; `lodge setup` re-probes): falling back to TCG, expect slow boots"}, nil
	}
	return Accel{vmm.AccelKVM, "/dev/kvm is usable"}, nil
}

// Env is everything needed to create sandboxes on this host.
type Env struct {
	Config config.Config
	Accel  Accel
	QEMU   string
	Deps   sandbox.Deps
	// VM is the machine template for new sandboxes.
	VM vmm.Config
	// Templates is where clones come from (nil: disabled).
	Templates *sandbox.Templates
	// Layers is where layer images are kept (nil: disabled).
	Layers *sandbox.Layers
}

// Resolve checks the host against cfg and builds the drivers. An error
// names what is missing and how to get it.
func Resolve(cfg config.Config, log *slog.Logger) (*Env, error) {
	var errs []error
	for _, f := range []struct{ what, path string }{
		{"guest kernel", cfg.Guest.Kernel}, {"guest initrd", cfg.Guest.Initrd},
	} {
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s %s not found (run `make setup`, or set guest.%s in %s)",
				ErrMissing, f.what, f.path, strings.Fields(f.what)[1], config.DefaultPath))
		}
	}
	qemuBin, err := qemu.FindBinary(cfg.VMM.QEMU)
	if err != nil {
		errs = append(errs, fmt.Errorf("%w: %w", ErrMissing, err))
	}
	accel, err := ChooseAccel(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	var h qemu.Host
	if accel.Accel == vmm.AccelTCG {
		if h.TSCkHz, err = hostTSCkHz(); err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrMissing, err))
		}
	}
	channel, err := chooseChannel(cfg.VMM.AgentChannel)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if accel.Accel == vmm.AccelTCG {
		log.Warn("no usable KVM: VMs run under TCG, expect slow boots", "accel", accel.Accel, "reason", accel.Reason)
	}
	driver := &qemu.Driver{Binary: qemuBin, Host: h, Log: log, ExecDir: qemu.DefaultExecDir, ROFile: FindROFile()}
	if cfg.VMM.QEMUUIDCount > 0 {
		driver.Users = &uidlease.Pool{Dir: UIDLeaseDir, First: cfg.VMM.QEMUUIDFirst, Count: cfg.VMM.QEMUUIDCount}
	}
	env := &Env{
		Config: cfg,
		Accel:  accel,
		QEMU:   qemuBin,
		Deps:   sandbox.Deps{Driver: driver, Log: log},
		VM: vmm.Config{Kernel: cfg.Guest.Kernel, Initrd: cfg.Guest.Initrd, VCPUs: cfg.VMM.VCPUs,
			MemoryMiB: cfg.VMM.MemoryMiB, Accel: accel.Accel, Channel: channel,
			Memory: vmm.Memory{Mergeable: cfg.VMM.MergePages}},
	}
	if cfg.Template.Enabled {
		env.Templates = &sandbox.Templates{
			Store:   &template.Store{Dir: cfg.Template.Dir, Log: log, KillStrays: sandbox.KillStrays},
			Classes: TemplateClasses(cfg),
			Inputs:  templateInputs(cfg, qemuBin, accel.Accel),
		}
		if p := PoolOf(cfg); p != nil {
			env.Templates.Pool, env.Templates.Refill = p, spawnKeeper(log)
			env.Templates.Store.Drain = p.Drain
		}
	}
	if cfg.Layers.Enabled {
		env.Layers = &sandbox.Layers{Store: &layers.Store{Dir: cfg.Layers.Dir, Log: log},
			WritableBytes: int64(cfg.Layers.WritableGiB) << 30}
	}
	return env, nil
}

// SandboxConfig returns the configuration of a new sandbox whose state
// lives in dir (which must not exist yet).
func (e *Env) SandboxConfig(id, dir string) sandbox.Config {
	sc := sandbox.Config{ID: id, Dir: dir, VM: e.VM, BootTimeout: e.Config.VMM.BootTimeout.Duration,
		HostReserveMiB: e.Config.VMM.HostReserveMiB}
	if e.Templates != nil {
		t := *e.Templates
		sc.Templates = &t
	}
	sc.Layers = e.Layers
	sc.Seccomp = &sandbox.SeccompCompiler{Helper: filepath.Join(e.Config.Guest.Dir, guestimage.SeccompHelperFile),
		Dir: SeccompCacheDir}
	return sc
}

// chooseChannel resolves vmm.agent_channel.
func chooseChannel(want string) (vmm.AgentChannel, error) {
	switch want {
	case "virtio-serial":
		return vmm.ChannelSerial, nil
	case "vsock":
		if !transport.VsockAvailable() {
			return "", fmt.Errorf("%w: vmm.agent_channel is \"vsock\" but /dev/vhost-vsock is unavailable (modprobe vhost_vsock)", ErrMissing)
		}
		return vmm.ChannelVsock, nil
	}
	if transport.VsockAvailable() {
		return vmm.ChannelVsock, nil
	}
	return vmm.ChannelSerial, nil
}

// TemplateClasses are the shapes cfg's templates are made in.
func TemplateClasses(cfg config.Config) template.Classes {
	return template.Classes{VCPUs: cfg.Template.VCPUClasses, MemoryMiB: cfg.Template.MemoryClassesMiB}
}

// templateInputs is everything of the host that a template guest's state
// depends on: the kernel, initrd and QEMU files, the CPU model and kernel
// arguments this driver gives guests of accel (qemu.GuestFact), and the
// host's boot. The host's TSC
// rate is one, but where it is measured it varies by a few kHz from one
// process to the next: the boot stands for it (the rate is fixed for a
// boot), so a template never outlives the boot it was made on.
func templateInputs(cfg config.Config, qemuBin string, accel vmm.Accel) template.Inputs {
	return template.Inputs{Files: []string{cfg.Guest.Kernel, cfg.Guest.Initrd, qemuBin},
		Facts: []string{"host_boot=" + bootID(), qemu.GuestFact(accel)}}
}
