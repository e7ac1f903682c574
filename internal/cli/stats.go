package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// ctrStats is what `lodge-runtime events --stats` says of a container's
// cgroup in its guest.
type ctrStats struct {
	Data struct {
		CPU struct {
			Usage struct {
				Total uint64 `json:"total"`
			} `json:"usage"`
		} `json:"cpu"`
		Memory struct {
			Usage struct {
				Limit uint64 `json:"limit"`
				Usage uint64 `json:"usage"`
			} `json:"usage"`
		} `json:"memory"`
		Pids struct {
			Current uint64 `json:"current"`
		} `json:"pids"`
	} `json:"data"`
}

func (a *app) sample(cmd *cobra.Command, id string) (ctrStats, error) {
	var out bytes.Buffer
	var s ctrStats
	if code, msg := a.runtime(cmd.Context(), &out, "events", "--stats", id); code != 0 {
		return s, fmt.Errorf("stats: %s", msg)
	}
	return s, json.Unmarshal(out.Bytes(), &s)
}

func addStatsCommand(root *cobra.Command, a *app) {
	var noStream bool
	var format string
	stats := &cobra.Command{
		Use:   "stats [--no-stream] [--format table|json|TEMPLATE] [CONTAINER...]",
		Short: "CPU, memory and processes of running containers (inside their VMs)",
		RunE: func(cmd *cobra.Command, args []string) error {
			for {
				if err := a.printStats(cmd, cmd.OutOrStdout(), args, format); err != nil {
					return err
				}
				if noStream {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	stats.Flags().BoolVar(&noStream, "no-stream", false, "print once")
	stats.Flags().StringVar(&format, "format", "table", "table, json (docker's fields, and Lodge's numbers: CPUPercent, MemUsageBytes, MemLimitBytes, PIDsCount) or a Go template")
	root.AddCommand(stats)
}

// statsRow is a container's line of lodge stats: docker's fields (as
// docker's JSON has them, strings), then the same as numbers.
type statsRow struct {
	ID, Container, Name                     string
	CPUPerc, MemUsage, MemPerc, PIDs        string
	NetIO, BlockIO                          string
	CPUPercent                              float64
	MemUsageBytes, MemLimitBytes, PIDsCount uint64
}

// statsLine is row's line of the table.
func statsLine(r statsRow) string {
	return strings.Join([]string{r.Container, r.Name, r.CPUPerc, r.MemUsage, r.MemPerc, r.PIDs}, "\t")
}

func (a *app) printStats(cmd *cobra.Command, w io.Writer, names []string, format string) error {
	var ctrs []*ctrRecord
	if len(names) == 0 {
		all, err := allCtrs()
		if err != nil {
			return err
		}
		for _, r := range all {
			if _, running := r.status(); running {
				ctrs = append(ctrs, r)
			}
		}
	}
	for _, n := range names {
		r, err := findCtr(n)
		if err != nil {
			return err
		}
		ctrs = append(ctrs, r)
	}
	first := map[string]ctrStats{}
	t0 := time.Now()
	for _, r := range ctrs {
		if s, err := a.sample(cmd, r.ID); err == nil {
			first[r.ID] = s
		}
	}
	time.Sleep(500 * time.Millisecond)
	elapsed := time.Since(t0)
	rows := make([]statsRow, 0, len(ctrs))
	for _, r := range ctrs {
		row := statsRow{ID: r.ID, Container: r.ID[:12], Name: r.Name, CPUPerc: "--", MemUsage: "-- / --", MemPerc: "--", PIDs: "--", NetIO: "--", BlockIO: "--"}
		s0, ok := first[r.ID]
		s1, err := a.sample(cmd, r.ID)
		if ok && err == nil {
			row.CPUPercent = float64(s1.Data.CPU.Usage.Total-s0.Data.CPU.Usage.Total) / float64(elapsed.Nanoseconds()) * 100
			m := s1.Data.Memory.Usage
			if m.Limit == 0 || m.Limit >= 1<<60 {
				// No limit of its own: what its VM has, as docker
				// gives the host's memory.
				m.Limit = uint64(a.cfg.VMM.MemoryMiB) << 20
			}
			memPct := float64(m.Usage) / float64(m.Limit) * 100
			row.MemUsageBytes, row.MemLimitBytes, row.PIDsCount = m.Usage, m.Limit, s1.Data.Pids.Current
			row.CPUPerc, row.MemPerc = fmt.Sprintf("%.2f%%", row.CPUPercent), fmt.Sprintf("%.2f%%", memPct)
			row.MemUsage = humanSize(int64(m.Usage)) + " / " + humanSize(int64(m.Limit))
			row.PIDs = fmt.Sprint(row.PIDsCount)
		}
		rows = append(rows, row)
	}
	return printList(w, rows, format, "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tPIDS", statsLine)
}
