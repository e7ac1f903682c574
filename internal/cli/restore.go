package cli

import (
	"errors"
	"fmt"
	"sync"

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
// A --rm container that is not running (its run cut short, so never
// removed) is removed. Run on a host that did not stop, it starts only
// those of them that are not running.
//
// Its counterpart, `lodge system shutdown` (the unit's ExecStop), is what
// dockerd does as it stops: every running container stopped as `lodge
// stop` stops it (its stop signal, SIGKILL after its stop timeout), all at
// once, but marked as stopped by the host, not by hand, so that no policy
// starts it again now and restore does at boot. A container stopped so
// ends its VM in order: what it wrote to its root is synced to the host
// (killed with the host, its guest's unwritten pages are lost).

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
		// The host's shutdown stopped it, or its run never recorded its
		// end (the host stopped under it).
		cut := r.HostStopped || r.ExitCode == nil && r.FinishedAt.IsZero()
		within := p.MaximumRetryCount == 0 || r.RestartCount < p.MaximumRetryCount
		return !r.ManuallyStopped && within && (cut || r.Restarting || p.restarts(r))
	}
	return false
}

// shutdown stops every running container (and cancels the restarts
// policies were about to make) for the host's shutdown.
func (a *app) shutdown(cmd *cobra.Command) error {
	ctrs, err := allCtrs()
	if err != nil {
		return err
	}
	var errs []error
	var stopping []*ctrRecord
	for _, r := range ctrs {
		st, running := r.status()
		if !running && st != "restarting" {
			continue
		}
		if _, err := updateCtr(cmd.Context(), r.ID, func(c *ctrRecord) { c.HostStopped = true }); err != nil {
			errs = append(errs, err)
			continue
		}
		if running {
			stopping = append(stopping, r)
		}
	}
	for i, err := range atOnce(stopping, func(r *ctrRecord) error { return signalStop(a, r, r.stopTimeout()) }) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(cmd.OutOrStdout(), stopping[i].Name)
	}
	return errors.Join(errs...)
}

// atOnce runs f on every item at the same time; errs[i] is item i's.
func atOnce[T any](items []T, f func(T) error) []error {
	errs := make([]error, len(items))
	var wg sync.WaitGroup
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(it)
		}()
	}
	wg.Wait()
	return errs
}

func addRestoreCommand(system *cobra.Command, a *app) {
	system.AddCommand(&cobra.Command{
		Use:   "shutdown",
		Short: "stop every running container for the host's shutdown (what docker's daemon does as it stops); system restore starts them again at boot",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.shutdown(cmd); err != nil {
				return lodgeError(err)
			}
			return nil
		},
	})
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
				st, running := r.status()
				if running || st == "created" || st == "creating" {
					continue
				}
				if r.AutoRemove {
					// A --rm container whose run the host's stop cut short:
					// removed, as its end would have removed it (and as
					// dockerd removes it at its start).
					if err := removeCtr(a, r, true); err != nil {
						errs = append(errs, fmt.Errorf("container %s (--rm): %w", r.Name, err))
					}
					continue
				}
				if !bootRestarts(r) {
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
