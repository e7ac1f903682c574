package host

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/vmm"
	"github.com/lodgeruntime/lodge/internal/vmm/qemu"
)

// A template's inputs carry the CPU model and kernel arguments the driver
// gives guests of its accelerator, so that templates keyed by them are
// rebuilt when those change (TestGuestFactCoversTheGuest keeps the fact
// whole).
func TestTemplateInputsCarryDriverGuestFact(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Guest.Kernel, cfg.Guest.Initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd.img")
	qemuBin := filepath.Join(dir, "qemu")
	for _, f := range []string{cfg.Guest.Kernel, cfg.Guest.Initrd, qemuBin} {
		os.WriteFile(f, []byte(filepath.Base(f)), 0o644)
	}
	keys := map[vmm.Accel]string{}
	for _, accel := range []vmm.Accel{vmm.AccelKVM, vmm.AccelTCG} {
		in := templateInputs(cfg, qemuBin, accel)
		if !slices.Contains(in.Facts, qemu.GuestFact(accel)) {
			t.Errorf("%s: the template inputs %v lack the driver's guest fact", accel, in.Facts)
		}
		k, err := template.Key(template.Shape{VCPUs: 1, MemoryMiB: 256}, in)
		if err != nil {
			t.Fatal(err)
		}
		keys[accel] = k
	}
	if keys[vmm.AccelKVM] == keys[vmm.AccelTCG] {
		t.Errorf("guests given another CPU or kernel arguments share the template %s", keys[vmm.AccelKVM])
	}
}
