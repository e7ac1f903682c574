package ctrshim

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/vmm"
)

func TestRoleOf(t *testing.T) {
	t.Parallel()
	ann := func(kv ...string) *specs.Spec {
		s := &specs.Spec{Annotations: map[string]string{}}
		for i := 0; i < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
		return s
	}
	cases := map[string]struct {
		spec *specs.Spec
		want role
	}{
		"lone container": {ann(), role{group: "c1", ownsVM: true}},
		"pod sandbox": {ann(annContainerType, typeSandbox, annSandboxID, "c1"),
			role{group: "c1", inPod: true, sandbox: true, ownsVM: true}},
		"pod workload": {ann(annContainerType, typeContainer, annSandboxID, "pod9"),
			role{group: "pod9", inPod: true, joinsPod: true}},
	}
	for name, c := range cases {
		if got := roleOf("c1", c.spec); got != c.want {
			t.Errorf("%s: %+v, want %+v", name, got, c.want)
		}
	}
	if podDir("/r", "k8s.io", "a") == podDir("/r", "default", "a") {
		t.Error("pods of two namespaces share a state directory")
	}
	if d := podDir(DefaultStateRoot, "k8s.io", strings.Repeat("f", 64)); len(d)+len("/vm/agent.sock") > 100 {
		t.Errorf("state dir %s too long for unix sockets", d)
	}
}

func TestSizeVM(t *testing.T) {
	t.Parallel()
	base := vmm.Config{VCPUs: 1, MemoryMiB: 256}
	spec := func(ann map[string]string, limit int64) *specs.Spec {
		s := &specs.Spec{Annotations: ann, Linux: &specs.Linux{}}
		if limit > 0 {
			s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
		}
		return s
	}
	got, err := sizeVM(base, spec(map[string]string{annSandboxMemory: "536870912", annSandboxQuota: "150000",
		annSandboxPeriod: "100000"}, 0))
	if err != nil || got.MemoryMiB != 512+128 || got.VCPUs != min(2, runtime.NumCPU()) {
		t.Errorf("pod resources: %+v %v", got, err)
	}
	if got, err := sizeVM(base, spec(nil, 64<<20)); err != nil || got.MemoryMiB != 64+128 {
		t.Errorf("container limit: %+v %v", got, err)
	}
	if got, err := sizeVM(base, spec(nil, 0)); err != nil || got.MemoryMiB != 256 || got.VCPUs != 1 {
		t.Errorf("no limits: %+v %v", got, err)
	}
	if got, err := sizeVM(base, spec(map[string]string{annVMMemory: "1024", annVMVCPUs: "1"}, 64<<20)); err != nil ||
		got.MemoryMiB != 1024 || got.VCPUs != 1 {
		t.Errorf("overrides: %+v %v", got, err)
	}
	if _, err := sizeVM(base, spec(map[string]string{"io.lodge.template": "false"}, 0)); err != nil {
		t.Errorf("io.lodge.template=false refused: %v", err)
	}
	for _, bad := range []map[string]string{{annVMMemory: "12"}, {annVMVCPUs: "0"}, {annVMVCPUs: "9999"},
		{annVMMemory: "lots"}, {"io.lodge.vm.kernel": "/evil"}, {"io.lodge.template": "maybe"}} {
		if _, err := sizeVM(base, spec(bad, 0)); !errors.Is(err, errAnnotation) {
			t.Errorf("%v accepted: %v", bad, err)
		}
	}
}
