// Package hostcg fences a VM on the host: the supervisor enters the host
// cgroup the spec names (linux.cgroupsPath) before it starts QEMU, which
// inherits it, and once the container exists that cgroup
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
	"path/filepath"
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

// JoinOwn moves the processes pids into every host cgroup of the calling
// process (a pooled clone's QEMU and keeper, adopted by a sandbox whose
// supervisor or shim entered its cgroup: Enter). Memory they charged
// before stays charged where it was (cgroup v2 never moves it; v1 only
// with memory.move_charge_at_immigrate).
func JoinOwn(pids ...int) error {
	return join(pids, false)
}

// LeaveForRoot moves the calling process into the root host cgroup of
// every hierarchy it is in: a pool's keeper, started by a sandbox's
// supervisor or shim, must not stay in that sandbox's cgroup, which goes
// with it.
func LeaveForRoot() error {
	return join([]int{os.Getpid()}, true)
}

func join(pids []int, toRoot bool) error {
	own, err := cgroups.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return fmt.Errorf("host cgroups: %w", err)
	}
	var dirs []string
	if p, ok := own[""]; ok { // cgroup v2, alone or beside v1 (hybrid)
		root := "/sys/fs/cgroup"
		if !cgroups.IsCgroup2UnifiedMode() {
			root = "/sys/fs/cgroup/unified"
		}
		if toRoot {
			p = "/"
		}
		if _, err := os.Stat(root); err == nil {
			dirs = append(dirs, filepath.Join(root, p))
		}
	}
	if !cgroups.IsCgroup2UnifiedMode() {
		mounts, err := cgroups.GetCgroupMounts(false)
		if err != nil {
			return fmt.Errorf("host cgroups: %w", err)
		}
		for _, m := range mounts {
			if len(m.Subsystems) == 0 {
				continue
			}
			p, ok := own[m.Subsystems[0]]
			if !ok {
				continue
			}
			if toRoot {
				p = m.Root
			}
			rel, err := filepath.Rel(m.Root, p)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue // not visible in this mount
			}
			dirs = append(dirs, filepath.Join(m.Mountpoint, rel))
		}
	}
	for _, d := range dirs {
		for _, pid := range pids {
			if err := cgroups.WriteCgroupProc(d, pid); err != nil {
				return fmt.Errorf("move pid %d into host cgroup %s: %w", pid, d, err)
			}
		}
	}
	return nil
}
