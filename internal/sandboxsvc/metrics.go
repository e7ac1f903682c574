package sandboxsvc

import (
	"context"
	"fmt"
	"time"
)

// Metrics is a sample of a sandbox's use (E2B's getMetrics): of its
// container's cgroup in its guest, over half a second.
type Metrics struct {
	Timestamp time.Time `json:"timestamp"`
	// CPUUsedPct is its CPU time over the sample, in percent of one CPU.
	CPUUsedPct float64 `json:"cpu_used_pct"`
	// MemUsed and MemTotal are its memory and its limit, in bytes.
	MemUsed  uint64 `json:"mem_used"`
	MemTotal uint64 `json:"mem_total"`
	// PIDs counts its processes.
	PIDs uint64 `json:"pids"`
}

// Metrics samples sandbox id, running or paused.
func (s *Service) Metrics(ctx context.Context, id string) (Metrics, error) {
	if _, err := s.Get(id); err != nil {
		return Metrics{}, err
	}
	m, err := s.run.Metrics(ctx, id)
	if err != nil {
		return Metrics{}, fmt.Errorf("sandbox %s: %w", id, err)
	}
	m.Timestamp = s.now().UTC()
	return m, nil
}
