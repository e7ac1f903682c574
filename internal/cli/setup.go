package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/guestimage"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/vmm"
	"github.com/lodgeruntime/lodge/internal/vmm/qemu"
)

// kvmProbeTimeout bounds the KVM test boot; a KVM guest answers in about
// a second.
const kvmProbeTimeout = 20 * time.Second

// cmdSetup fetches the kernel (once) or installs the one given, rebuilds the initrd and, where
// /dev/kvm looks usable, boots one KVM guest to prove it (every time: the
// verdict stands until the next setup or host boot).
func cmdSetup(ctx context.Context, cfg config.Config, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	agentBin := fs.String("agent", "bin/lodge-agent", "static lodge-agent binary to put in the initrd")
	initBin := fs.String("init", "", "static lodge-init binary to put in the initrd (default: lodge-init beside the agent)")
	kernel := fs.String("kernel", "", "a PVH vmlinux with everything built in (Lodge's own: `make kernel`) instead of guest.kernel_package's")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if *initBin == "" {
		*initBin = filepath.Join(filepath.Dir(*agentBin), "lodge-init")
	}
	art, err := guestimage.Setup(ctx, guestimage.SetupArgs{
		Dir: cfg.Guest.Dir, Package: cfg.Guest.KernelPackage, Kernel: *kernel, Agent: *agentBin, Init: *initBin, Log: log,
	})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	var names []string
	for _, m := range art.Modules {
		names = append(names, m.Name)
	}
	log.Info("guest ready", "kernel", art.Kernel, "release", art.Release, "initrd", art.Initrd, "modules", names)
	if err := setupBuiltinImage(ctx, cfg, log); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	// Every setup probes again, not only the first of a host boot: what
	// it finds depends on Lodge's own build too (its QEMU's jail), which
	// an upgrade changes.
	if cfg.VMM.Accel == "auto" && qemu.CheckKVM() == nil {
		probeKVM(ctx, cfg, log)
	}
	return nil
}

// setupBuiltinImage imports the built-in busybox image (made from the
// host's busybox-static) unless the store has that very image.
func setupBuiltinImage(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	img, err := image.BuiltinImage(image.BuiltinBusybox)
	if err != nil {
		return err
	}
	st := &image.Store{Dir: cfg.Images.Dir, Layers: &layers.Store{Dir: cfg.Layers.Dir, Log: log}, Log: log}
	im, err := st.Import(ctx, img, image.BuiltinName)
	if err != nil {
		return fmt.Errorf("built-in image: %w", err)
	}
	log.Info("built-in image ready", "name", displayName(im.Name), "id", im.ConfigDigest.Hex[:12])
	return nil
}

// probeKVM boots a guest with KVM and records whether it worked, so that
// "auto" does not pick a /dev/kvm that cannot run guests (seen on nested
// hosts: VMs are created but the guest hangs or QEMU fails to set MSRs).
func probeKVM(ctx context.Context, cfg config.Config, log *slog.Logger) {
	cfg.VMM.Accel = "kvm"
	cfg.VMM.BootTimeout = config.Duration{Duration: kvmProbeTimeout}
	env, err := host.Resolve(cfg, log)
	if err != nil {
		log.Warn("kvm probe skipped", "err", err)
		return
	}
	root, err := os.MkdirTemp("", "lodge-kvm-probe-")
	if err != nil {
		return
	}
	defer os.RemoveAll(root)
	sc := env.SandboxConfig("kvm-probe", filepath.Join(root, "kvm-probe"))
	sc.VM.Accel = vmm.AccelKVM
	if sc.Templates != nil { // the probe must boot a kernel, and its log says so
		sc.Templates.OptOut = "a KVM probe boots a kernel"
	}
	log.Info("probing KVM with a test boot", "timeout", kvmProbeTimeout)
	sb, err := sandbox.Create(ctx, env.Deps, sc)
	if err != nil {
		reason := firstLine(err.Error())
		log.Warn("KVM is present but a guest did not boot with it: Lodge will use TCG", "err", reason)
		if werr := host.WriteKVMVerdict(cfg.Guest.Dir, false, reason); werr != nil {
			log.Warn("record kvm verdict", "err", werr)
		}
		return
	}
	sb.Destroy(ctx)
	host.WriteKVMVerdict(cfg.Guest.Dir, true, "")
	log.Info("KVM works", "dir", filepath.Join(cfg.Guest.Dir))
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
