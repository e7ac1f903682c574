package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
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
	stats := &cobra.Command{
		Use:   "stats [--no-stream] [CONTAINER...]",
		Short: "CPU, memory and processes of running containers (inside their VMs)",
		RunE: func(cmd *cobra.Command, args []string) error {
			for {
				if err := a.printStats(cmd, cmd.OutOrStdout(), args); err != nil {
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
	root.AddCommand(stats)
}

func (a *app) printStats(cmd *cobra.Command, w io.Writer, names []string) error {
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
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tPIDS")
	for _, r := range ctrs {
		s0, ok := first[r.ID]
		s1, err := a.sample(cmd, r.ID)
		if !ok || err != nil {
			fmt.Fprintf(tw, "%s\t%s\t--\t-- / --\t--\t--\n", r.ID[:12], r.Name)
			continue
		}
		cpu := float64(s1.Data.CPU.Usage.Total-s0.Data.CPU.Usage.Total) / float64(elapsed.Nanoseconds()) * 100
		m := s1.Data.Memory.Usage
		memPct := 0.0
		if m.Limit > 0 && m.Limit < 1<<60 {
			memPct = float64(m.Usage) / float64(m.Limit) * 100
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%s / %s\t%.2f%%\t%d\n", r.ID[:12], r.Name, cpu,
			humanSize(int64(m.Usage)), humanSize(int64(m.Limit)), memPct, s1.Data.Pids.Current)
	}
	return tw.Flush()
}
