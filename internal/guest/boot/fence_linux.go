package boot

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ContainersCgroup is the parent of every container's cgroup (the agent
// names them lodge/<id>).
const ContainersCgroup = "/sys/fs/cgroup/lodge"

// fenceReserve is what the containers' cgroup leaves of the memory
// available once the guest is up (its root tmpfs, modules and the agent
// loaded), for a guest of total bytes: room for the agent's own growth
// (stdio relays, RPCs, a container's creation) and the kernel's, an
// eighth of the guest, at least 32 MiB and at most 64 MiB. The host sizes a VM 128 MiB above its
// container's limit, and about 60 MiB of that is in use at boot, so a
// container's own limit fits below the fence.
func fenceReserve(total uint64) uint64 {
	return min(max(total/8, 32<<20), 64<<20)
}

// fenceContainers makes the containers' parent cgroup, with every
// controller, and caps its memory at what is available less the reserve: a
// container without a limit of its own that eats all it can is OOM-killed
// in its cgroup, at once, instead of driving the whole guest (agent
// included) into reclaim until the kernel's global OOM killer acts.
func fenceContainers() (limit uint64, err error) {
	info, err := memInfo()
	if err != nil {
		return 0, err
	}
	total, avail := info["MemTotal"], info["MemAvailable"]
	if total == 0 || avail <= fenceReserve(total) {
		return 0, fmt.Errorf("guest memory: %d bytes available of %d", avail, total)
	}
	if err := os.MkdirAll(ContainersCgroup, 0o755); err != nil {
		return 0, err
	}
	if b, err := os.ReadFile(filepath.Join(ContainersCgroup, "cgroup.controllers")); err == nil {
		var enable []string
		for _, c := range strings.Fields(string(b)) {
			enable = append(enable, "+"+c)
		}
		if err := os.WriteFile(filepath.Join(ContainersCgroup, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
			return 0, fmt.Errorf("enable controllers below %s: %w", ContainersCgroup, err)
		}
	}
	limit = avail - fenceReserve(total)
	if err := os.WriteFile(filepath.Join(ContainersCgroup, "memory.max"), []byte(strconv.FormatUint(limit, 10)), 0); err != nil {
		return 0, fmt.Errorf("fence the containers' memory: %w", err)
	}
	return limit, nil
}

// memInfo reads /proc/meminfo's kB fields, in bytes.
func memInfo() (map[string]uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			out[k] = kb << 10
		}
	}
	return out, sc.Err()
}
