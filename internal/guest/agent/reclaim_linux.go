package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
)

// cgroupRoot is where the agent mounts cgroup v2 (boot).
const cgroupRoot = "/sys/fs/cgroup"

// reclaimWait bounds how long Reclaim waits for the kernel.
const reclaimWait = 10 * time.Second

// reclaiming is held while a write to memory.reclaim runs.
var reclaiming sync.Mutex

// Reclaim drops the file cache of the container's cgroup with
// memory.reclaim (Linux 5.19): its pages are freed, and free page
// reporting gives them back to the host once they make whole blocks. The
// guest has no swap, so what the container's programs hold in memory
// stays; so does what they read next (read again from its layers). A
// paused container's cgroup can be reclaimed: reclaim needs nothing of
// its processes.
func (cs *containers) Reclaim(ctx context.Context, req *agentv1.ContainerRequest) (*agentv1.ReclaimResponse, error) {
	if _, err := cs.get(req.ContainerId); err != nil {
		return nil, err
	}
	pid, err := cs.firstPid(req.ContainerId)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	dir, err := cgroupOf(pid)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: %v", req.ContainerId, err)
	}
	st, err := memoryStat(dir)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: %v", req.ContainerId, err)
	}
	before := st["file"]
	// Only what reclaim can free is asked for: asked for more, the
	// kernel retries, and here (Linux 6.1) a second such write was found
	// blocked for good, with the guest idle. The write is bounded all the
	// same, and one runs at a time.
	want := st["inactive_file"] + st["active_file"]
	want -= min(want, st["file_mapped"]+st["file_dirty"]+st["file_writeback"])
	if want > 0 {
		if !reclaiming.TryLock() {
			return nil, status.Errorf(codes.FailedPrecondition, "container %s: an earlier reclaim in this guest has not ended", req.ContainerId)
		}
		done := make(chan error, 1)
		go func() {
			defer reclaiming.Unlock()
			done <- os.WriteFile(filepath.Join(dir, "memory.reclaim"), []byte(strconv.FormatUint(want, 10)), 0)
		}()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				return nil, status.Errorf(codes.FailedPrecondition, "container %s: reclaim: %v", req.ContainerId, err)
			}
		case <-time.After(reclaimWait):
			cs.log.Warn("reclaim goes on after its wait", "container_id", req.ContainerId, "asked", want, "wait", reclaimWait)
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	after, err := fileCache(dir)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: %v", req.ContainerId, err)
	}
	return &agentv1.ReclaimResponse{FileBefore: before, FileAfter: after}, nil
}

// cgroupOf is the cgroup v2 directory of process pid.
func cgroupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	dir, ok := cgroup2Dir(b)
	if !ok {
		return "", fmt.Errorf("process %d has no cgroup v2", pid)
	}
	return dir, nil
}

// cgroup2Dir is the cgroup v2 directory a /proc/PID/cgroup names.
func cgroup2Dir(procCgroup []byte) (string, bool) {
	for _, line := range strings.Split(string(procCgroup), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(p, "/") {
			return filepath.Join(cgroupRoot, filepath.Clean(p)), true
		}
	}
	return "", false
}

// fileCache is the "file" line of dir's memory.stat.
func fileCache(dir string) (uint64, error) {
	st, err := memoryStat(dir)
	if err != nil {
		return 0, err
	}
	v, ok := st["file"]
	if !ok {
		return 0, fmt.Errorf("%s/memory.stat has no file line", dir)
	}
	return v, nil
}

// memoryStat reads dir's memory.stat.
func memoryStat(dir string) (map[string]uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return nil, err
	}
	st := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if n, err := strconv.ParseUint(v, 10, 64); ok && err == nil {
			st[k] = n
		}
	}
	return st, nil
}
