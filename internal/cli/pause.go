package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// addPauseCommands adds `lodge pause`, `unpause` and `rename`.
func addPauseCommands(root *cobra.Command, a *app) {
	// transition is a runtime command for containers in state from.
	transition := func(use, short, from, op string) *cobra.Command {
		return &cobra.Command{
			Use: use + " CONTAINER...", Short: short, Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return eachCtr(cmd, args, func(r *ctrRecord) error {
					if st, _ := r.status(); st != from {
						return fmt.Errorf("container %s is %s, not %s", r.Name, st, from)
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
	pause := transition("pause", "freeze every process of containers (their cgroup, in their VMs)", "running", "pause")
	unpause := transition("unpause", "thaw paused containers", "paused", "resume")
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
