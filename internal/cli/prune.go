package cli

// What docker's prune and inspect commands give for volumes and
// networks, and `system prune`, which takes them together.

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/build"
	"github.com/lodgeruntime/lodge/internal/image"
)

// pruneVolumes removes the volumes no container mounts: anonymous ones,
// or every one with all (docker's volume prune since 23.0).
func pruneVolumes(all bool) ([]string, error) {
	vs, err := listVolumes()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, v := range vs {
		if !v.Anonymous && !all || len(volumeUsers(v.Name)) > 0 {
			continue
		}
		if err := removeVolume(v.Name, false); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, v.Name)
	}
	return gone, errors.Join(errs...)
}

// pruneNetworks removes the networks made with `lodge network create`
// that no container is on.
func pruneNetworks(cmd *cobra.Command) ([]string, error) {
	nets, err := lodgeNetworks()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, l := range nets {
		if l.Name == bridgeNetwork || len(networkUsers(l.Name)) > 0 {
			continue
		}
		if err := removeNetwork(cmd.Context(), l.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, l.Name)
	}
	return gone, errors.Join(errs...)
}

// pruneImages removes the names of images no container uses: untagged
// ones (<none>), or every one with all but the built-in busybox (lodge
// setup's, which the sandbox service and make demo start from); then the
// content nothing names.
func (a *app) pruneImages(cmd *cobra.Command, all bool) ([]string, string, error) {
	st := a.images()
	refs, err := st.List()
	if err != nil {
		return nil, "", err
	}
	ctrs, _ := allCtrs()
	used := func(name string) bool {
		return slices.ContainsFunc(ctrs, func(r *ctrRecord) bool { return r.Image == name })
	}
	var gone []string
	for _, ref := range refs {
		if !all && !strings.HasPrefix(ref.Name, "<none>@") || used(ref.Name) || ref.Name == image.BuiltinName {
			continue
		}
		if _, err := st.Untag(cmd.Context(), ref.Name); err != nil {
			return gone, "", err
		}
		gone = append(gone, displayName(ref.Name))
	}
	blobs, lays, freed, err := st.Prune(cmd.Context())
	return gone, fmt.Sprintf("%d blobs and %d layer images, %s", blobs, lays, humanSize(freed)), err
}

// printGone prints what a prune removed under a heading, as docker's.
func printGone(w io.Writer, heading string, gone []string) {
	if len(gone) == 0 {
		return
	}
	fmt.Fprintln(w, heading)
	for _, g := range gone {
		fmt.Fprintln(w, g)
	}
}

// pruneBuilder forgets the build cache's steps and removes the RUN cache
// mounts no build uses.
func (a *app) pruneBuilder(cmd *cobra.Command) error {
	dir := a.images().Dir
	mounts, err := build.PruneCacheMounts(dir)
	steps, err2 := build.ForgetSteps(cmd.Context(), dir)
	w := cmd.OutOrStdout()
	var gone []string
	var size int64
	for _, m := range mounts {
		gone = append(gone, "cache mount "+m.ID)
		size += m.Size
	}
	if steps > 0 {
		gone = append(gone, fmt.Sprintf("%d remembered steps", steps))
	}
	printGone(w, "Deleted build cache objects:", gone)
	if len(gone) > 0 {
		fmt.Fprintln(w, "Total reclaimed space:", humanSize(size))
	}
	return errors.Join(err, err2)
}

func addPruneCommands(root *cobra.Command, a *app) {
	find := func(name string) *cobra.Command {
		for _, c := range root.Commands() {
			if c.Name() == name {
				return c
			}
		}
		panic("no command " + name)
	}
	var force, all, volumes bool
	ask := func(cmd *cobra.Command, what string) bool {
		return force || confirm(a.env.In, cmd.ErrOrStderr(), "This removes "+what+". Go on?")
	}

	volPrune := &cobra.Command{Use: "prune [-f] [-a]", Short: "remove the volumes no container mounts (anonymous ones; -a: all)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !ask(cmd, "the volumes no container mounts") {
				return nil
			}
			gone, err := pruneVolumes(all)
			printGone(cmd.OutOrStdout(), "Deleted Volumes:", gone)
			return err
		}}
	volPrune.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	volPrune.Flags().BoolVarP(&all, "all", "a", false, "named volumes too")
	var volFormat, netFormat string
	volInspect := &cobra.Command{Use: "inspect [-f TEMPLATE] VOLUME...", Short: "a volume's details, as JSON (or a Go template's output for each)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return inspectEach(cmd, args, volFormat, inspectVolume) }}
	volInspect.Flags().StringVarP(&volFormat, "format", "f", "", "a Go template, e.g. '{{.Mountpoint}}'")
	find("volume").AddCommand(volPrune, volInspect)

	netPrune := &cobra.Command{Use: "prune [-f]", Short: "remove the networks no container is on", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !ask(cmd, "the networks no container is on") {
				return nil
			}
			gone, err := pruneNetworks(cmd)
			printGone(cmd.OutOrStdout(), "Deleted Networks:", gone)
			return err
		}}
	netPrune.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	netInspect := &cobra.Command{Use: "inspect [-f TEMPLATE] NETWORK...", Short: "a network's details, as JSON (or a Go template's output for each)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return inspectEach(cmd, args, netFormat, inspectNetwork)
		}}
	netInspect.Flags().StringVarP(&netFormat, "format", "f", "", "a Go template, e.g. '{{.Internal}}'")
	find("network").AddCommand(netPrune, netInspect)

	sysPrune := &cobra.Command{Use: "prune [-f] [-a] [--volumes]", Short: "remove stopped containers, unused networks, untagged images (-a: unused ones) and unused content", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			what := "every stopped container, every network no container is on, the build cache, "
			if all {
				what += "every image no container uses"
			} else {
				what += "every untagged image"
			}
			if volumes {
				what += ", every anonymous volume no container mounts"
			}
			if !ask(cmd, what) {
				return nil
			}
			w := cmd.OutOrStdout()
			ctrs, err1 := pruneCtrs(a)
			printGone(w, "Deleted Containers:", ctrs)
			nets, err2 := pruneNetworks(cmd)
			printGone(w, "Deleted Networks:", nets)
			var err3 error
			if volumes {
				var vols []string
				vols, err3 = pruneVolumes(false)
				printGone(w, "Deleted Volumes:", vols)
			}
			ims, freed, err4 := a.pruneImages(cmd, all)
			printGone(w, "Untagged Images:", ims)
			if freed != "" {
				fmt.Fprintln(w, "Removed content:", freed)
			}
			return errors.Join(err1, err2, err3, err4, a.pruneBuilder(cmd))
		}}
	builderPrune := &cobra.Command{Use: "prune [-f]", Short: "remove the build cache: the steps lodge build remembers, and RUN cache mounts no build uses", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !ask(cmd, "the build cache (the steps builds remember, and RUN cache mounts no build uses)") {
				return nil
			}
			return a.pruneBuilder(cmd)
		}}
	builderPrune.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	builder := &cobra.Command{Use: "builder", Short: "lodge build's cache"}
	builder.AddCommand(builderPrune)
	root.AddCommand(builder)

	sysPrune.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	sysPrune.Flags().BoolVarP(&all, "all", "a", false, "images no container uses, not only untagged ones")
	sysPrune.Flags().BoolVar(&volumes, "volumes", false, "anonymous volumes no container mounts too")
	system := &cobra.Command{Use: "system", Short: "the host's lodge as a whole"}
	system.AddCommand(sysPrune)
	addRestoreCommand(system, a)
	addEventsCommand(system, a) // docker system events
	addInfoCommands(root, system, a)
	root.AddCommand(system)
}
