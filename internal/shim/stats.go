package shim

import (
	"context"

	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/typeurl/v2"

	"github.com/lodgeruntime/lodge/internal/sandbox"
)

// Stats reports the container's cgroup counters (cgroup v2 in the guest)
// as containerd's cgroup2 metrics.
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, toWire(err)
	}
	st, err := t.c.Stats(ctx)
	if err != nil {
		return nil, toWire(err)
	}
	a, err := typeurl.MarshalAnyToProto(Metrics(st))
	if err != nil {
		return nil, toWire(err)
	}
	return &taskapi.StatsResponse{Stats: a}, nil
}

// Metrics converts the guest's counters to containerd's cgroup2 metrics.
func Metrics(st *sandbox.Stats) *v2.Metrics {
	return &v2.Metrics{
		Pids: &v2.PidsStat{Current: st.PidsCurrent, Limit: st.PidsLimit},
		CPU: &v2.CPUStat{UsageUsec: st.CpuUsageNs / 1000, UserUsec: st.CpuUserNs / 1000, SystemUsec: st.CpuSystemNs / 1000,
			NrPeriods: st.CpuPeriods, NrThrottled: st.CpuThrottledPeriods, ThrottledUsec: st.CpuThrottledNs / 1000},
		Memory:       &v2.MemoryStat{Usage: st.MemoryUsage, UsageLimit: st.MemoryLimit, MaxUsage: st.MemoryMaxUsage},
		MemoryEvents: &v2.MemoryEvents{OomKill: st.OomKills},
	}
}
