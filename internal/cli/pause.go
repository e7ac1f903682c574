package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/runtimecli"
)

// addPauseCommands adds `lodge pause`, `unpause` and `rename`.
func addPauseCommands(root *cobra.Command, a *app) {
	// transition is a runtime command for containers in state from.
	// first, if set, comes before the op for each container.
	transition := func(use, short, from, op string, first func(*cobra.Command, *ctrRecord) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " CONTAINER...", Short: short, Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return eachCtr(cmd, args, func(r *ctrRecord) error {
					if st, _ := r.status(); st != from {
						return fmt.Errorf("container %s is %s, not %s", r.Name, st, from)
					}
					if first != nil {
						if err := first(cmd, r); err != nil {
							return err
						}
					}
					if err := runtimeOp(a, op, r.ID); err != nil {
						return err
					}
					r.emit(use)
					return nil
				})
			},
		}
	}
	var reclaim bool
	pause := transition("pause", "freeze every process of containers (their cgroup, in their VMs)", "running", "pause",
		func(cmd *cobra.Command, r *ctrRecord) error {
			if !reclaim {
				return nil
			}
			before, after, err := runtimecli.Reclaim(cmd.Context(), runtimeState, r.ID)
			if err != nil {
				return fmt.Errorf("container %s: its memory was not reclaimed, and it was not paused: %w", r.Name, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: file cache %s -> %s\n", r.Name, humanSize(int64(before)), humanSize(int64(after)))
			return nil
		})
	pause.Flags().BoolVar(&reclaim, "reclaim", false, "first give the host back the memory their file cache holds in their VMs (their files are read again when next used)")
	unpause := transition("unpause", "thaw paused containers", "paused", "resume", nil)
	rename := &cobra.Command{
		Use:   "rename CONTAINER NEW_NAME",
		Short: "rename a container",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			if args[1] == "" {
				return fmt.Errorf("rename %s: the new name is empty", r.Name)
			}
			name, err := uniqueName(args[1])
			if err != nil {
				return err
			}
			nr, err := updateCtr(cmd.Context(), r.ID, func(c *ctrRecord) { c.Name = name })
			if err == nil {
				nr.emit("rename", "oldName", r.Name)
			}
			return err
		},
	}
	root.AddCommand(pause, unpause, rename)
}
