// Package hostcg fences a VM on the host: the supervisor enters the host
// cgroup the spec names (linux.cgroupsPath) before it starts QEMU and
// virtiofsd, which inherit it, and once the container exists that cgroup
// gets the container's CPU limits (shares, quota and period, realtime
// budget, cpuset). The guest
// enforces every limit on the container itself; this keeps the whole VM,
// device emulation included, within the CPU the container was given.
//
// Memory and pids limits are not copied: the VM needs more memory than
// its container (the guest kernel, QEMU itself) and more threads, so the
// exact values would kill the VM. They stay in the guest only. The host
// cgroup's memory is bounded instead by what the whole VM may take: its
// RAM and QEMU's own (sandbox.HostMemoryBytes).
package hostcg

import (
	"fmt"
	"os"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Usable reports whether path names a cgroupfs path this package handles
// (systemd's "slice:prefix:name" form is not).
func Usable(path string) bool {
	return path != "" && !strings.Contains(path, ":")
}

// cpuResources copies the CPU limits of r.
func cpuResources(r *specs.LinuxResources) *cgroups.Resources {
	res := &cgroups.Resources{SkipDevices: true}
	if r == nil || r.CPU == nil {
		return res
	}
	c := r.CPU
	if c.Shares != nil {
		res.CpuShares = *c.Shares
	}
	if c.Quota != nil {
		res.CpuQuota = *c.Quota
	}
	if c.Period != nil {
		res.CpuPeriod = *c.Period
	}
	if c.RealtimeRuntime != nil {
		res.CpuRtRuntime = *c.RealtimeRuntime
	}
	if c.RealtimePeriod != nil {
		res.CpuRtPeriod = *c.RealtimePeriod
	}
	res.CpusetCpus, res.CpusetMems = c.Cpus, c.Mems
	return res
}

// managerFor is the manager of the host cgroup at path (below the host's
// cgroup filesystem whatever path says: the library cleans it), with res
// (none if nil) to set.
func managerFor(path string, res *cgroups.Resources) (cgroups.Manager, error) {
	if res == nil {
		res = &cgroups.Resources{SkipDevices: true}
	}
	return manager.New(&cgroups.Cgroup{Path: path, Resources: res})
}

// Enter moves the calling process into the host cgroup at path (created
// if needed; a relative path is below the caller's cgroup, as runc does)
// without limits: the VM's boot is not charged to the container (under a
// 10% quota a TCG boot takes minutes). Update sets the limits once the
// container exists.
func Enter(path string) error {
	if !Usable(path) {
		return nil
	}
	m, err := managerFor(path, nil)
	if err != nil {
		return fmt.Errorf("host cgroup %s: %w", path, err)
	}
	if err := m.Apply(os.Getpid()); err != nil {
		return fmt.Errorf("enter host cgroup %s: %w", path, err)
	}
	return nil
}

// Update sets the CPU limits of the host cgroup at path and, if
// memoryBytes is not 0, its memory limit (what the whole VM may take: see
// sandbox.HostMemoryBytes).
func Update(path string, r *specs.LinuxResources, memoryBytes int64) error {
	if !Usable(path) {
		return nil
	}
	res := cpuResources(r)
	res.Memory = memoryBytes
	m, err := managerFor(path, res)
	if err != nil {
		return err
	}
	return m.Set(res)
}

// Exists reports whether the host cgroup at path exists (someone else,
// e.g. the kubelet for a pod, made it).
func Exists(path string) bool {
	if !Usable(path) {
		return false
	}
	m, err := managerFor(path, nil)
	return err == nil && m.Exists()
}

// Remove deletes the host cgroup at path once its processes are gone.
func Remove(path string) error {
	if !Usable(path) {
		return nil
	}
	m, err := managerFor(path, nil)
	if err != nil {
		return err
	}
	return m.Destroy()
}
