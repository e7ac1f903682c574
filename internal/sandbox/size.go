package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/vmm"
)

// VMOverheadMiB is the guest memory added to the containers' memory
// limits when a VM is sized from them: the guest kernel, the agent and the
// page cache for root filesystems. Measured: an idle guest with the cloud
// kernel and the agent uses about 60 MiB.
const VMOverheadMiB = 128

// SizeVM sizes a VM for containers with these resources: the sum of their
// memory limits plus VMOverheadMiB, and enough vCPUs for the sum of their
// CPU quotas (at most the host's CPUs). Without limits the configured
// defaults in base stay.
func SizeVM(base vmm.Config, resources ...*specs.LinuxResources) vmm.Config {
	var memBytes int64
	var cpus float64
	var cpusetCPUs int // vCPUs a cpuset needs: its highest CPU + 1
	for _, r := range resources {
		if r == nil {
			continue
		}
		if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
			memBytes += *r.Memory.Limit
		}
		if c := r.CPU; c != nil && c.Quota != nil && *c.Quota > 0 && c.Period != nil && *c.Period > 0 {
			cpus += float64(*c.Quota) / float64(*c.Period)
		}
		if c := r.CPU; c != nil && c.Cpus != "" {
			cpusetCPUs = max(cpusetCPUs, maxCPU(c.Cpus)+1)
		}
	}
	if memBytes > 0 {
		base.MemoryMiB = int((memBytes+(1<<20)-1)>>20) + VMOverheadMiB
	}
	if cpus > 0 {
		n := int(cpus)
		if float64(n) < cpus {
			n++
		}
		base.VCPUs = min(n, runtime.NumCPU())
	}
	if cpusetCPUs > base.VCPUs {
		base.VCPUs = min(cpusetCPUs, runtime.NumCPU())
	}
	return base
}

// ErrHostMemory reports a host without the free memory a new VM needs.
var ErrHostMemory = errors.New("not enough free memory on the host")

// memAvailableMiB is the host's MemAvailable (/proc/meminfo) in MiB.
var memAvailableMiB = func() (int, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: MemAvailable %q", v)
			}
			return kb >> 10, nil
		}
	}
	return 0, errors.New("/proc/meminfo has no MemAvailable")
}

// admitMemory refuses a VM whose memory the host could not give it now:
// its RAM is allocated as the guest touches it, so a VM started beyond
// what is free would run until the host's OOM killer picks some process,
// perhaps another sandbox's QEMU. A host whose MemAvailable cannot be
// read admits every VM.
func admitMemory(cfg Config) error {
	avail, err := memAvailableMiB()
	if err != nil {
		return nil
	}
	if cfg.VM.MemoryMiB > avail-cfg.HostReserveMiB {
		return fmt.Errorf("%w for a VM of %d MiB: %d MiB available, of which vmm.host_reserve_mib keeps %d MiB for the host; "+
			"free memory on the host, or give the sandbox a lower memory limit", ErrHostMemory, cfg.VM.MemoryMiB, avail, cfg.HostReserveMiB)
	}
	return nil
}

// maxCPU returns the highest CPU in a cpuset list ("0-3,8"), -1 if none.
func maxCPU(list string) int {
	hi := -1
	for _, part := range strings.Split(list, ",") {
		_, last, _ := strings.Cut(strings.TrimSpace(part), "-")
		if last == "" {
			last = strings.TrimSpace(part)
		}
		if n, err := strconv.Atoi(last); err == nil && n > hi {
			hi = n
		}
	}
	return hi
}
