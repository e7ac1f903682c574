package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// A container's deadline: `lodge run --timeout D` stops each run D after it
// starts; `lodge update --timeout D` moves the current run's to D from now.
// The container's monitor (its log helper, or a foreground run) watches it,
// so it holds with no service or daemon running: what the sandbox service
// (internal/sandboxsvc) relies on to end untrusted code in time.

// deadlineTick is how often a monitor looks at its container's deadline.
const deadlineTick = time.Second

// deadline is when the container's current run is stopped (zero: never).
func (r *ctrRecord) deadline() time.Time {
	switch {
	case r.StartedAt.IsZero():
		return time.Time{}
	case !r.DeadlineFor.IsZero() && r.DeadlineFor.Equal(r.StartedAt):
		return r.Deadline
	case r.Timeout > 0:
		return r.StartedAt.Add(r.Timeout)
	}
	return time.Time{}
}

// watchDeadline stops container id once its deadline passes, as lodge stop
// does (its policy does not start it again), until ctx ends.
func (a *app) watchDeadline(ctx context.Context, id string) {
	t := time.NewTicker(deadlineTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := loadCtr(id)
		if err != nil {
			return
		}
		d := r.deadline()
		if d.IsZero() || time.Now().Before(d) {
			continue
		}
		if _, running := r.status(); !running {
			continue
		}
		a.log.Info("the container's deadline passed: stopping it", "container_id", id, "deadline", d.Format(time.RFC3339))
		if err := stopCtr(a, r, r.stopTimeout()); err != nil {
			a.log.Warn("stop at the deadline", "container_id", id, "err", err)
		}
		return
	}
}

func addUpdateCommand(root *cobra.Command, a *app) {
	var timeout time.Duration
	update := &cobra.Command{
		Use:   "update --timeout DURATION CONTAINER...",
		Short: "move running containers' deadlines: each is stopped DURATION from now (0: no deadline for this run)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("timeout") {
				return errors.New("update: --timeout is what lodge updates (a VM's resources are fixed when it starts)")
			}
			if timeout < 0 {
				return fmt.Errorf("--timeout %v: want 0 or a positive duration", timeout)
			}
			return eachCtr(cmd, args, func(r *ctrRecord) error {
				if _, running := r.status(); !running {
					return fmt.Errorf("container %s is not running", r.Name)
				}
				_, err := updateCtr(cmd.Context(), r.ID, func(c *ctrRecord) {
					c.DeadlineFor, c.Deadline = c.StartedAt, time.Time{}
					if timeout > 0 {
						c.Deadline = time.Now().UTC().Add(timeout)
					}
				})
				return err
			})
		},
	}
	update.Flags().DurationVar(&timeout, "timeout", 0, "stop each container this long from now, e.g. 5m (0: no deadline for this run)")
	root.AddCommand(update)
}
