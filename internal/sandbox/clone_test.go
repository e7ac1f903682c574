package sandbox

import (
	"os"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// A sandbox cold-boots exactly when a clone cannot serve it, and says why.
func TestCloneBlocker(t *testing.T) {
	t.Parallel()
	tpl := func() *Templates {
		return &Templates{Store: &template.Store{Dir: "/x"},
			Classes: template.Classes{VCPUs: []int{1, 2}, MemoryMiB: []int{256, 512}}}
	}
	base := func() Config {
		return Config{VM: vmm.Config{VCPUs: 1, MemoryMiB: 256, Channel: vmm.ChannelSerial}, Templates: tpl()}
	}
	nic := vmm.NIC{Tap: os.Stdin, MAC: "02:00:00:00:00:01"}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" for a clone, else a word of the reason
	}{
		{"plain", func(*Config) {}, ""},
		{"one NIC (a CNI pod)", func(c *Config) { c.VM.NICs = []vmm.NIC{nic} }, ""},
		{"rounds up", func(c *Config) { c.VM.MemoryMiB = 300 }, ""},
		{"disabled", func(c *Config) { c.Templates = nil }, "disabled"},
		{"opted out", func(c *Config) { c.Templates.OptOut = "io.lodge.template=false" }, "io.lodge.template=false"},
		{"two NICs", func(c *Config) { c.VM.NICs = []vmm.NIC{nic, nic} }, "network interfaces"},
		{"vsock", func(c *Config) { c.VM.Channel = vmm.ChannelVsock }, "vsock"},
		{"too much memory", func(c *Config) { c.VM.MemoryMiB = 1024 }, "size class"},
		{"too many vCPUs", func(c *Config) { c.VM.VCPUs = 4 }, "size class"},
	} {
		cfg := base()
		tc.mod(&cfg)
		got := cloneBlocker(cfg)
		if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The template's inputs carry the device layout and the kernel command
// line, so a change of either makes another template.
func TestTemplateInputsCarryLayout(t *testing.T) {
	t.Parallel()
	cfg := Config{VM: vmm.Config{Accel: vmm.AccelTCG, KernelArgs: []string{"a=1"}},
		Templates: &Templates{Inputs: template.Inputs{Facts: []string{"tsc_khz=1"}}}}
	in := templateInputs(cfg)
	facts := strings.Join(in.Facts, "\n")
	for _, want := range []string{"tsc_khz=1", templateLayout, "accel=tcg", "a=1", templatePreload} {
		if !strings.Contains(facts, want) {
			t.Errorf("facts %q lack %q", facts, want)
		}
	}
	if len(cfg.Templates.Inputs.Facts) != 1 {
		t.Error("templateInputs changed the caller's inputs")
	}
}

// A template is built with its placeholder NIC and slot MAC even when the
// sandbox whose start builds it has a pod NIC; a clone of it takes the
// pod's NIC, restores into the template's RAM privately.
func TestTemplateAndCloneVMs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the placeholder tap needs root")
	}
	podNIC := vmm.NIC{Tap: os.Stdin, MAC: "46:7b:f3:c7:90:35"}
	base := vmm.Config{VCPUs: 1, MemoryMiB: 200, Accel: vmm.AccelTCG, NICs: []vmm.NIC{podNIC}}
	shape := template.Shape{VCPUs: 2, MemoryMiB: 256}
	tv, closeSlot, err := templateBuildConfig(base, shape, "/tpl/k.tmp-1")
	if err != nil {
		t.Fatal(err)
	}
	defer closeSlot()
	if len(tv.NICs) != 1 || tv.NICs[0].MAC != TemplateSlotMAC || tv.NICs[0].Tap == os.Stdin {
		t.Errorf("template NICs %+v: want one placeholder with the slot MAC", tv.NICs)
	}
	if !tv.Memory.Shared || tv.Memory.File != "/tpl/k.tmp-1/memory" || tv.VCPUs != 2 || tv.MemoryMiB != 256 {
		t.Errorf("template VM %+v", tv)
	}
	tpl := &template.Template{Dir: "/tpl/k", Meta: template.Meta{Shape: shape}}
	cv, closeSlot2, err := CloneConfig(base, tpl, vmm.Share9P{Tag: SharedTag, Path: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeSlot2()
	if len(cv.NICs) != 1 || cv.NICs[0].MAC != podNIC.MAC {
		t.Errorf("clone NICs %+v: want the pod's", cv.NICs)
	}
	if cv.Memory.Shared || cv.Memory.File != "/tpl/k/memory" || !cv.Incoming || cv.MemoryMiB != 256 {
		t.Errorf("clone VM %+v", cv)
	}
	if strings.Join(cv.KernelArgs, " ") != strings.Join(tv.KernelArgs, " ") {
		t.Errorf("kernel args differ: template %q, clone %q", tv.KernelArgs, cv.KernelArgs)
	}
}
