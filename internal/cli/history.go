package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// addHistoryCommand adds `lodge history` (and `lodge image history`):
// an image's history entries, newest first, each with the size of the
// layer it made, as docker prints them.
func addHistoryCommand(root, imageCmd *cobra.Command, a *app) {
	var noTrunc, quiet bool
	history := &cobra.Command{
		Use:   "history [--no-trunc] [-q] IMAGE",
		Short: "show how an image was made: its steps, newest first, with the size of each layer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, err := a.images().Find(normalise(args[0]))
			if err != nil {
				return err
			}
			hist := im.Config.History
			layers := im.Manifest.Layers
			type row struct{ id, created, by, size, comment string }
			var rows []row
			li := 0
			for _, h := range hist {
				r := row{id: "<missing>", created: since(h.Created.Time), by: h.CreatedBy, size: "0B", comment: h.Comment}
				if !h.EmptyLayer && li < len(layers) {
					r.size = humanSize(layers[li].Size)
					li++
				}
				rows = append(rows, r)
			}
			if len(rows) > 0 {
				rows[len(rows)-1].id = im.ConfigDigest.Hex[:12]
				if noTrunc {
					rows[len(rows)-1].id = im.ConfigDigest.String()
				}
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			if !quiet {
				fmt.Fprintln(w, "IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
			}
			for i := len(rows) - 1; i >= 0; i-- {
				r := rows[i]
				if quiet {
					fmt.Fprintln(w, r.id)
					continue
				}
				by := strings.ReplaceAll(r.by, "\t", " ")
				if !noTrunc && len(by) > 45 {
					by = by[:44] + "…"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.id, r.created, by, r.size, r.comment)
			}
			return w.Flush()
		},
	}
	history.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not cut the commands short")
	history.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the image IDs")
	root.AddCommand(history)
	imageCmd.AddCommand(cloneCmd(history))
}
