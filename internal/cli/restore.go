package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// lodge system restore: what docker's daemon does when it starts, for a
// host that has none. A host that stops takes every VM, monitor and
// runtime state (in /run) with it, and nothing records how the runs
// ended; at boot, a systemd unit runs `lodge system restore`, which starts
// again each container whose restart policy keeps it running, as dockerd
// does at its start:
//
//	always          every one that ever ran (after lodge stop too, as docker's)
//	unless-stopped  unless lodge stop or kill ended it
//	on-failure[:N]  one whose run the host's stop cut short, or that had
//	                failed and was to start again, within its N retries
//
// Run on a host that did not stop, it starts only those of them that are
// not running.

// bootRestarts says whether restore starts the container of record r.
func bootRestarts(r *ctrRecord) bool {
	p := r.RestartPolicy
	if p == nil || r.AutoRemove || r.StartedAt.IsZero() {
		return false
	}
	switch p.Name {
	case "always":
		return true
	case "unless-stopped":
		return !r.ManuallyStopped
	case "on-failure":
		cut := r.ExitCode == nil && r.FinishedAt.IsZero() // the run never recorded its end
		within := p.MaximumRetryCount == 0 || r.RestartCount < p.MaximumRetryCount
		return !r.ManuallyStopped && within && (cut || r.Restarting || p.restarts(r))
	}
	return false
}

func addRestoreCommand(system *cobra.Command, a *app) {
	system.AddCommand(&cobra.Command{
		Use:   "restore",
		Short: "start again the containers their restart policy keeps running (at boot: what docker's daemon does when it starts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrs, err := allCtrs()
			if err != nil {
				return lodgeError(err)
			}
			var errs []error
			for _, r := range ctrs {
				if st, running := r.status(); running || st == "created" || st == "creating" || !bootRestarts(r) {
					continue
				}
				if err := a.startCtr(cmd.Context(), r, false); err != nil {
					errs = append(errs, fmt.Errorf("container %s: %w", r.Name, err))
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), r.Name)
			}
			if err := errors.Join(errs...); err != nil {
				return lodgeError(err)
			}
			return nil
		},
	})
}
