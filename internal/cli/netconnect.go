package cli

import (
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"
)

// addNetworkConnectCommands adds `network connect` and `network
// disconnect` for containers that are not running: a microVM has no
// device hotplug, so a running container's VM cannot take another
// interface or give one back; the change holds from its next start.
func addNetworkConnectCommands(nw *cobra.Command) {
	var ip string
	connect := &cobra.Command{
		Use:   "connect [--ip ADDRESS] NETWORK CONTAINER",
		Short: "put a container that is not running on one more network, from its next start",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			reqs, err := runNetworks([]string{args[0]}, ip)
			if err != nil {
				return err
			}
			return changeNetworks(cmd.Context(), args[1], "connect", reqs[0].Name, func(n *ctrNetwork) error {
				r := reqs[0]
				if slices.Contains(n.names(), r.Name) {
					return fmt.Errorf("it is on network %s already", r.Name)
				}
				n.Extra = append(n.Extra, netLink{Name: r.Name, IfName: fmt.Sprintf("eth%d", len(n.Extra)+1), FixedIP: r.IP})
				return nil
			})
		},
	}
	connect.Flags().StringVar(&ip, "ip", "", "its IPv4 address on the network, kept by every start")
	disconnect := &cobra.Command{
		Use:   "disconnect NETWORK CONTAINER",
		Short: "take a container that is not running off a network, from its next start",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if name == "bridge" {
				name = bridgeNetwork
			}
			return changeNetworks(cmd.Context(), args[1], "disconnect", name, func(n *ctrNetwork) error {
				names := n.names()
				i := slices.Index(names, name)
				switch {
				case i < 0:
					return fmt.Errorf("it is not on network %s", name)
				case len(names) == 1:
					return fmt.Errorf("network %s is its only one (a container's network namespace is made with it: lodge run --network none makes one without)", name)
				case i == 0:
					// The next network becomes its first, with the
					// default route and the published ports.
					n.Name, n.FixedIP, n.Extra = n.Extra[0].Name, n.Extra[0].FixedIP, n.Extra[1:]
				default:
					n.Extra = slices.Delete(n.Extra, i-1, i)
				}
				for j := range n.Extra {
					n.Extra[j].IfName = fmt.Sprintf("eth%d", j+1)
				}
				return nil
			})
		},
	}
	nw.AddCommand(connect, disconnect)
}

// changeNetworks changes the networks of a container that is not
// running, holding its monitor's lock so that no start joins them
// meanwhile.
func changeNetworks(ctx context.Context, name, action, network string, change func(*ctrNetwork) error) error {
	r, err := findCtr(name)
	if err != nil {
		return err
	}
	if err := notRunning(r); err != nil {
		return err
	}
	monitor, r, err := holdEnded(ctx, r)
	if err != nil {
		return err
	}
	defer monitor.Close()
	if err := notRunning(r); err != nil {
		return err
	}
	var changeErr error
	_, err = updateCtr(ctx, r.ID, func(c *ctrRecord) {
		n := *c.Network
		n.Extra = slices.Clone(n.Extra)
		if changeErr = change(&n); changeErr == nil {
			c.Network = &n
		}
	})
	if changeErr != nil {
		return fmt.Errorf("container %s: %w", r.Name, changeErr)
	}
	if err == nil {
		emit("network", action, network, map[string]string{"name": network, "type": "bridge", "container": r.ID})
	}
	return err
}

// notRunning refuses a container whose networks cannot change now.
func notRunning(r *ctrRecord) error {
	switch st, running := r.status(); {
	case running || st == "paused":
		return fmt.Errorf("container %s is running: its VM cannot take or give back a network interface while it runs (a microVM has no device hotplug): lodge stop %s, change its networks, lodge start %s", r.Name, r.Name, r.Name)
	case st == "created" || st == "creating":
		return fmt.Errorf("container %s is created: its VM joined its networks as it was made: lodge rm %s and lodge run it with --network", r.Name, r.Name)
	case r.Network == nil:
		return fmt.Errorf("container %s has no network (--network none)", r.Name)
	}
	return nil
}
