package runtimecli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
)

// event is one line of `events` output, as runc prints it.
type event struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data any    `json:"data,omitempty"`
}

// runcStats is the subset of runc's stats that the guest reports.
type runcStats struct {
	CPU struct {
		Usage struct {
			Total  uint64 `json:"total"`
			Kernel uint64 `json:"kernel"`
			User   uint64 `json:"user"`
		} `json:"usage"`
		Throttling struct {
			Periods          uint64 `json:"periods,omitempty"`
			ThrottledPeriods uint64 `json:"throttledPeriods,omitempty"`
			ThrottledTime    uint64 `json:"throttledTime,omitempty"`
		} `json:"throttling"`
	} `json:"cpu"`
	Memory struct {
		Usage struct {
			Limit uint64 `json:"limit"`
			Usage uint64 `json:"usage,omitempty"`
			Max   uint64 `json:"max,omitempty"`
		} `json:"usage"`
		Raw map[string]uint64 `json:"raw,omitempty"`
	} `json:"memory"`
	Pids struct {
		Current uint64 `json:"current,omitempty"`
		Limit   uint64 `json:"limit,omitempty"`
	} `json:"pids"`
}

func toRuncStats(m *v2.Metrics) runcStats {
	var s runcStats
	if c := m.CPU; c != nil {
		s.CPU.Usage.Total, s.CPU.Usage.Kernel, s.CPU.Usage.User = c.UsageUsec*1000, c.SystemUsec*1000, c.UserUsec*1000
		s.CPU.Throttling.Periods, s.CPU.Throttling.ThrottledPeriods, s.CPU.Throttling.ThrottledTime =
			c.NrPeriods, c.NrThrottled, c.ThrottledUsec*1000
	}
	if mem := m.Memory; mem != nil {
		s.Memory.Usage.Limit, s.Memory.Usage.Usage, s.Memory.Usage.Max = mem.UsageLimit, mem.Usage, mem.MaxUsage
	}
	if e := m.MemoryEvents; e != nil {
		s.Memory.Raw = map[string]uint64{"oom_kill": e.OomKill}
	}
	if p := m.Pids; p != nil {
		s.Pids.Current, s.Pids.Limit = p.Current, p.Limit
	}
	return s
}

func cmdEvents(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("events")
	once := fs.Bool("stats", false, "print stats once and exit")
	interval := fs.Duration("interval", 5*time.Second, "how often to print stats")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"events: expects exactly one container id"}
	}
	if *interval <= 0 {
		return usageError{"events: --interval must be positive"}
	}
	id := fs.Arg(0)
	enc := json.NewEncoder(env.IO.Out)
	return withTask(ctx, g, id, func(t taskapi.TaskService, _ *record) error {
		for {
			resp, err := t.Stats(ctx, &taskapi.StatsRequest{ID: id})
			if err != nil {
				if *once {
					return err
				}
				return nil // the container is gone
			}
			m, err := decodeMetrics(resp.Stats)
			if err != nil {
				return err
			}
			if err := enc.Encode(event{Type: "stats", ID: id, Data: toRuncStats(m)}); err != nil {
				return err
			}
			if *once {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(*interval):
			}
		}
	})
}

func decodeMetrics(a *anypb.Any) (*v2.Metrics, error) {
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, err
	}
	m, ok := v.(*v2.Metrics)
	if !ok {
		return nil, fmt.Errorf("unexpected stats type %T", v)
	}
	return m, nil
}

// cmdUpdate changes a container's resources from a JSON file (-r, "-" for
// stdin) or from flags, as `runc update` does.
func cmdUpdate(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("update")
	file := fs.String("resources", "", "OCI LinuxResources JSON file, - for stdin")
	fs.StringVar(file, "r", "", "OCI LinuxResources JSON file, - for stdin")
	ints := map[string]*string{}
	for _, n := range []string{"memory", "memory-reservation", "memory-swap", "cpu-shares", "cpu-quota",
		"cpu-period", "pids-limit", "blkio-weight", "kernel-memory", "kernel-memory-tcp",
		"cpu-rt-period", "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems", "l3-cache-schema", "mem-bw-schema"} {
		ints[n] = fs.String(n, "", "")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"update: expects exactly one container id"}
	}
	id := fs.Arg(0)
	r := &specs.LinuxResources{Memory: &specs.LinuxMemory{}, CPU: &specs.LinuxCPU{}, Pids: &specs.LinuxPids{},
		BlockIO: &specs.LinuxBlockIO{}}
	if *file != "" {
		var in io.Reader = env.IO.In
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		if err := json.NewDecoder(in).Decode(r); err != nil {
			return fmt.Errorf("update: decode resources: %w", err)
		}
	}
	num := func(n string) (*int64, error) {
		v := *ints[n]
		if v == "" {
			return nil, nil
		}
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, usageError{fmt.Sprintf("update: --%s %q is not a number", n, v)}
		}
		return &x, nil
	}
	var err error
	set := func(dst **int64, n string) {
		if err == nil {
			var v *int64
			if v, err = num(n); v != nil {
				*dst = v
			}
		}
	}
	set(&r.Memory.Limit, "memory")
	set(&r.Memory.Reservation, "memory-reservation")
	set(&r.Memory.Swap, "memory-swap")
	set(&r.CPU.Quota, "cpu-quota")
	var shares, period, pids, weight *int64
	set(&shares, "cpu-shares")
	set(&period, "cpu-period")
	set(&pids, "pids-limit")
	set(&weight, "blkio-weight")
	if err != nil {
		return err
	}
	if shares != nil {
		v := uint64(*shares)
		r.CPU.Shares = &v
	}
	if period != nil {
		v := uint64(*period)
		r.CPU.Period = &v
	}
	if pids != nil {
		r.Pids.Limit = pids
	}
	if weight != nil {
		v := uint16(*weight)
		r.BlockIO.Weight = &v
	}
	if v := *ints["cpuset-cpus"]; v != "" {
		r.CPU.Cpus = v
	}
	if v := *ints["cpuset-mems"]; v != "" {
		r.CPU.Mems = v
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return withTask(ctx, g, id, func(t taskapi.TaskService, _ *record) error {
		_, err := t.Update(ctx, &taskapi.UpdateTaskRequest{ID: id,
			Resources: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: b}})
		return err
	})
}
