package ctrshim

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/testbundle"
	"github.com/lodgeruntime/lodge/internal/vmm"
	"github.com/lodgeruntime/lodge/internal/vmm/qemu"
)

// evil marks a hostile value: it must never appear on a host command line.
const evil = "EVIL"

// Pod input is untrusted (the CVE-2020-27151 class: an annotation that
// chose the hypervisor's binary and kernel parameters). Each row sets one
// annotation, CRI field or OCI spec field of a pod sandbox's spec to a
// hostile value; the pod is then refused, or QEMU's command line, cold and
// cloned, is exactly a plain pod's but for the -m and -smp that the sizing
// rules derive from resources as numbers. Everything else in the spec goes to the guest's agent,
// never to a host command line (sandbox.guestSpec).
func TestPodInputNeverReachesHostCommandLines(t *testing.T) {
	t.Parallel()
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	ann := func(k, v string) func(*specs.Spec) { return func(s *specs.Spec) { s.Annotations[k] = v } }
	for _, tc := range []struct {
		field   string
		set     func(*specs.Spec)
		refused bool // the pod is refused
		sized   bool // -m or -smp may change (as numbers)
	}{
		// Other runtimes' knobs for the hypervisor are not Lodge's.
		{"kata hypervisor path", ann("io.katacontainers.config.hypervisor.path", "/tmp/"+evil), false, false},
		{"kata kernel params", ann("io.katacontainers.config.hypervisor.kernel_params", "init=/"+evil), false, false},
		{"kata virtiofsd path", ann("io.katacontainers.config.hypervisor.virtio_fs_daemon", "/"+evil), false, false},
		{"kata virtiofsd args", ann("io.katacontainers.config.hypervisor.virtio_fs_extra_args", `["-o","`+evil+`"]`), false, false},
		{"kata memory", ann("io.katacontainers.config.hypervisor.default_memory", "999999"), false, false},
		// Lodge's own: an allow-list of numbers and a boolean.
		{"io.lodge.* unknown", ann("io.lodge.vm.kernel_params", evil), true, false},
		{"io.lodge.* qemu", ann("io.lodge.vm.qemu", "/"+evil), true, false},
		{"io.lodge.vm.memory_mib option", ann(annVMMemory, "512,mem-path=/"+evil), true, false},
		{"io.lodge.vm.memory_mib huge", ann(annVMMemory, "99999999999"), true, false},
		{"io.lodge.vm.vcpus option", ann(annVMVCPUs, "1 -device "+evil), true, false},
		{"io.lodge.vm.vcpus zero", ann(annVMVCPUs, "0"), true, false},
		{"io.lodge.template", ann("io.lodge.template", evil), true, false},
		{"io.lodge.vm.memory_mib", ann(annVMMemory, "1024"), false, true},
		// CRI's pod resources.
		{"cri sandbox memory", ann(annSandboxMemory, "1,"+evil), false, false},
		{"cri sandbox memory bytes", ann(annSandboxMemory, "1073741824"), false, true},
		{"cri cpu quota", ann(annSandboxQuota, "-1 -"+evil), false, true},
		{"cri cpu period", ann(annSandboxPeriod, evil), false, true},
		{"cri pod name", ann("io.kubernetes.cri.sandbox-name", "a,b -device "+evil), false, false},
		{"cri namespace", ann("io.kubernetes.cri.sandbox-namespace", "../"+evil), false, false},
		{"cri log directory", ann("io.kubernetes.cri.sandbox-log-directory", "/"+evil), false, false},
		// The OCI spec.
		{"args", func(s *specs.Spec) { s.Process.Args = []string{"-device", evil, "-kernel", "/" + evil} }, false, false},
		{"env", func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "QEMU_ARGS=-"+evil, "LD_PRELOAD=/"+evil) }, false, false},
		{"cwd", func(s *specs.Spec) { s.Process.Cwd = "/" + evil + ",x" }, false, false},
		{"hostname", func(s *specs.Spec) { s.Hostname = evil + ",x -device y" }, false, false},
		{"root path", func(s *specs.Spec) { s.Root.Path = "/" + evil + ",readonly=on" }, false, false},
		{"mount source", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/m", Type: "bind", Source: "/" + evil + ",security_model=none", Options: []string{"rbind"}})
		}, false, false},
		{"mount type and options", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/" + evil, Type: "9p", Source: evil, Options: []string{"trans=virtio", evil}})
		}, false, false},
		{"sysctl", func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"kernel.core_pattern": "|/" + evil} }, false, false},
		{"cgroups path", func(s *specs.Spec) { s.Linux.CgroupsPath = "../../" + evil }, false, false},
		{"namespace path", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/1/ns/" + evil})
		}, false, false},
		{"devices", func(s *specs.Spec) {
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/" + evil, Type: "c", Major: 10, Minor: 232})
		}, false, false},
		{"memory limit", func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(512 << 20)}}
		}, false, true},
		{"cpu quota", func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(1 << 40), Period: u64(1)}}
		}, false, true},
		{"cpuset", func(s *specs.Spec) {
			s.Linux.Resources = &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0-4096," + evil}}
		}, false, true},
		{"labels", func(s *specs.Spec) {
			s.Process.ApparmorProfile, s.Process.SelinuxLabel, s.Linux.MountLabel = evil, evil, evil
		}, false, false},
		{"hooks", func(s *specs.Spec) { s.Hooks = &specs.Hooks{Prestart: []specs.Hook{{Path: "/" + evil}}} }, false, false},
	} {
		spec := podSpec()
		tc.set(spec)
		plain, hostile := hostCommandLines(t, podSpec()), []string(nil)
		vc, err := sizeVM(baseVM(), spec)
		if (err != nil) != tc.refused {
			t.Errorf("%s: sizeVM: %v, want refused %v", tc.field, err, tc.refused)
			continue
		}
		if err != nil {
			continue
		}
		hostile = commandLines(t, vc)
		if !tc.sized {
			if d := cmp.Diff(plain, hostile); d != "" {
				t.Errorf("%s: QEMU's command line changed (-plain +hostile):\n%s", tc.field, d)
			}
			continue
		}
		if strings.Contains(strings.Join(hostile, " "), evil) {
			t.Errorf("%s: %q", tc.field, hostile)
		}
		// Only the values of -m and -smp (and the memory backend's size) may differ.
		if len(hostile) != len(plain) {
			t.Errorf("%s: %d arguments, want %d", tc.field, len(hostile), len(plain))
			continue
		}
		for i := range plain {
			if hostile[i] != plain[i] && !slices.Contains([]string{"-m", "-smp", "-object"}, plain[max(i-1, 0)]) {
				t.Errorf("%s: argument %d %q, want %q", tc.field, i, hostile[i], plain[i])
			}
		}
	}
}

// Pod ids come from containerd, which allows letters, digits and ._-; one
// that would end QEMU's option strings is refused whatever the caller.
func TestHostileVMIDsRefused(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"a,b", "a b", "../x", "a\nb", "a=b", ""} {
		vc := sandbox.ColdConfig(sandbox.Config{ID: id, Dir: "/run/lodge/x", VM: baseVM()}, vmm.Share9P{Tag: sandbox.SharedTag, Path: "/run/lodge/x/share"})
		if argv, err := qemu.Argv(vc, qemu.Host{TSCkHz: 1_000_000}); err == nil {
			t.Errorf("VM id %q: accepted: %q", id, argv)
		}
	}
}

func baseVM() vmm.Config {
	return vmm.Config{Kernel: "/var/lib/lodge/guest/vmlinux", Initrd: "/var/lib/lodge/guest/initrd.img", VCPUs: 1,
		MemoryMiB: 256, Accel: vmm.AccelTCG, Channel: vmm.ChannelSerial}
}

// podSpec is a pod sandbox's spec as containerd's CRI plugin writes it.
func podSpec() *specs.Spec {
	s := testbundle.Spec("/pause")
	s.Annotations = map[string]string{annContainerType: typeSandbox, annSandboxID: "pod1",
		"io.kubernetes.cri.sandbox-name": "web", "io.kubernetes.cri.sandbox-namespace": "default"}
	return s
}

// hostCommandLines is QEMU's command line for the pod of spec, cold and
// cloned, one after the other.
func hostCommandLines(t *testing.T, spec *specs.Spec) []string {
	t.Helper()
	vc, err := sizeVM(baseVM(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return commandLines(t, vc)
}

func commandLines(t *testing.T, vm vmm.Config) []string {
	t.Helper()
	dir := "/run/containerd/lodge/k8s.io/pod1/vm"
	host := qemu.Host{TSCkHz: 1_000_000}
	// The pod's NIC (a tap the host made; its MAC the host's choice).
	tap, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	vm.NICs = []vmm.NIC{{Tap: tap, MAC: "02:00:00:00:00:01"}}
	cold, err := qemu.Argv(sandbox.ColdConfig(sandbox.Config{ID: "pod1", Dir: dir, VM: vm}, vmm.Share9P{Tag: sandbox.SharedTag, Path: filepath.Join(dir, "share")}), host)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &template.Template{Dir: "/run/lodge/templates/t1", Meta: template.Meta{Shape: template.Shape{VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB}}}
	vc, closeSlot, err := sandbox.CloneConfig(vm, tmpl, vmm.Share9P{Tag: sandbox.SharedTag, Path: filepath.Join(dir, "share")})
	if err != nil {
		t.Fatal(err)
	}
	defer closeSlot()
	vc.ID, vc.StateDir = "pod1", dir
	clone, err := qemu.Argv(vc, host)
	if err != nil {
		t.Fatal(err)
	}
	return append(cold, clone...)
}
