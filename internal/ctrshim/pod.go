package ctrshim

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/state"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// CRI's annotations on the specs of a pod's containers.
const (
	annContainerType = "io.kubernetes.cri.container-type"
	annSandboxID     = "io.kubernetes.cri.sandbox-id"
	annSandboxMemory = "io.kubernetes.cri.sandbox-memory"
	annSandboxQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	annSandboxPeriod = "io.kubernetes.cri.sandbox-cpu-period"

	typeSandbox   = "sandbox"
	typeContainer = "container"
)

// Lodge's own annotations: the only io.lodge.* keys a spec may carry.
const (
	annVMMemory = "io.lodge.vm.memory_mib" // guest memory, MiB
	annVMVCPUs  = "io.lodge.vm.vcpus"      // guest vCPUs
)

// DefaultStateRoot holds one directory per shim (per pod): the VM's state
// and the record `shim delete` cleans up from. Kept short: unix socket
// paths below it must fit in 108 bytes.
const DefaultStateRoot = "/run/lodge/shim"

// role says what a container is in its sandbox.
type role struct {
	group    string // the sandbox id: the pod's, or the container's own
	inPod    bool   // created by CRI
	sandbox  bool   // the pod's sandbox (pause) container
	ownsVM   bool   // its Create boots the VM
	joinsPod bool   // a workload container of a pod
}

func roleOf(id string, s *specs.Spec) role {
	ann := s.Annotations
	r := role{group: id, ownsVM: true}
	switch ann[annContainerType] {
	case typeSandbox:
		r.inPod, r.sandbox = true, true
	case typeContainer:
		r.inPod, r.joinsPod, r.ownsVM = true, true, false
		if sid := ann[annSandboxID]; sid != "" {
			r.group = sid
		}
	}
	return r
}

// podDir is the state directory of the shim serving group in namespace ns.
func podDir(root, ns, group string) string {
	h := sha256.Sum256([]byte(ns + "/" + group))
	return filepath.Join(root, hex.EncodeToString(h[:10]))
}

// podRecord is what a dead shim leaves for `shim delete` to clean up.
type podRecord struct {
	Namespace string      `json:"namespace"`
	Sandbox   string      `json:"sandbox"`
	Shim      procid.ID   `json:"shim"`
	VMProcs   []procid.ID `json:"vm_procs,omitempty"`
	Network   *netRecord  `json:"network,omitempty"`
}

const recordFile = "pod.json"

func (r *podRecord) save(dir string) error { return state.Write(filepath.Join(dir, recordFile), r) }

func loadPodRecord(dir string) (*podRecord, error) {
	var r podRecord
	if err := state.Read(filepath.Join(dir, recordFile), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// errAnnotation reports an io.lodge.* annotation that is unknown or bad.
var errAnnotation = errors.New("annotation")

// sizeVM sizes a pod's VM: from CRI's pod-level resources when it passes
// them (the sum of the containers' limits), else from the container's own
// limits; then the allow-listed io.lodge.* overrides.
func sizeVM(base vmm.Config, s *specs.Spec) (vmm.Config, error) {
	ann := s.Annotations
	if mem, _ := strconv.ParseInt(ann[annSandboxMemory], 10, 64); mem > 0 || ann[annSandboxQuota] != "" {
		res := &specs.LinuxResources{}
		if mem > 0 {
			res.Memory = &specs.LinuxMemory{Limit: &mem}
		}
		q, _ := strconv.ParseInt(ann[annSandboxQuota], 10, 64)
		p, _ := strconv.ParseUint(ann[annSandboxPeriod], 10, 64)
		if q > 0 && p > 0 {
			res.CPU = &specs.LinuxCPU{Quota: &q, Period: &p}
		}
		base = sandbox.SizeVM(base, res)
	} else if s.Linux != nil {
		base = sandbox.SizeVM(base, s.Linux.Resources)
	}
	var bad []string
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ann[k]
		switch {
		case k == annVMMemory:
			n, err := strconv.Atoi(v)
			if err != nil || n < 64 || n > math.MaxInt32 {
				bad = append(bad, fmt.Sprintf("%s=%q: want MiB, at least 64", k, v))
				continue
			}
			base.MemoryMiB = n
		case k == annVMVCPUs:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > runtime.NumCPU() {
				bad = append(bad, fmt.Sprintf("%s=%q: want 1..%d (the host's CPUs)", k, v, runtime.NumCPU()))
				continue
			}
			base.VCPUs = n
		case k == config.AnnotationTemplate:
			if _, err := config.TemplateOptOut(ann); err != nil {
				bad = append(bad, err.Error())
			}
		case k == config.AnnotationInit:
			if v != "direct" && v != "libcontainer" {
				bad = append(bad, fmt.Sprintf("%s=%q: want direct or libcontainer", k, v))
			}
		case strings.HasPrefix(k, "io.lodge."):
			bad = append(bad, fmt.Sprintf("%s is not a Lodge annotation (known: %s, %s, %s, %s)", k, annVMMemory, annVMVCPUs,
				config.AnnotationTemplate, config.AnnotationInit))
		}
	}
	if len(bad) > 0 {
		return base, fmt.Errorf("%w: %s", errAnnotation, strings.Join(bad, "; "))
	}
	return base, nil
}
