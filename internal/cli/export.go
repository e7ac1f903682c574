package cli

// lodge export and lodge import, docker's pair: a container's whole root
// as one tar (read by its guest, as commit reads its layer), and a tar of
// a root as a one-layer image.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lodgeruntime/lodge/internal/build"
	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
)

func addExportCommands(root *cobra.Command, a *app) {
	var output string
	export := &cobra.Command{
		Use:   "export [-o FILE] CONTAINER",
		Short: "write a container's whole root as a tar (to stdout unless -o)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			return writeAtomically(cmd.OutOrStdout(), output, func(w io.Writer) error {
				return a.changes(cmd.Context(), r, false, true, func(rd io.Reader) error {
					_, err := layers.ReadChanges(rd, w)
					return err
				})
			})
		},
	}
	export.Flags().StringVarP(&output, "output", "o", "", "write to FILE (made whole or not at all)")
	var changes []string
	var message string
	imp := &cobra.Command{
		Use:   "import [-c INSTRUCTION]... [-m MESSAGE] FILE|- [REPOSITORY[:TAG]]",
		Short: "make a one-layer image of a tar of a root (plain, gzip or zstd; - is stdin)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := tagName(args[1:])
			if err != nil {
				return err
			}
			var cfg v1.Config
			for _, c := range changes {
				if err := build.Change(&cfg, c); err != nil {
					return fmt.Errorf("--change %q: %w", c, err)
				}
			}
			st := a.images()
			file := args[0]
			if file == "-" {
				f, err := copyToStore(st, cmd.InOrStdin())
				if err != nil {
					return err
				}
				defer os.Remove(f)
				file = f
			}
			im, err := importImage(st, cmd, file, args[0], cfg, message, ref)
			if err != nil {
				return err
			}
			emitImage("import", im.ConfigDigest.String(), im.Name)
			fmt.Fprintln(cmd.OutOrStdout(), im.ConfigDigest.String())
			return nil
		},
	}
	imp.Flags().StringArrayVarP(&changes, "change", "c", nil, "a Dockerfile instruction for the image's config (as commit's)")
	imp.Flags().StringVarP(&message, "message", "m", "", "the history entry's comment")
	root.AddCommand(export, imp)
}

// importImage stores the root tar at file as a one-layer image.
func importImage(st *image.Store, cmd *cobra.Command, file, source string, cfg v1.Config, message, ref string) (*image.Image, error) {
	base, err := image.Scratch()
	if err != nil {
		return nil, err
	}
	im, err := st.Commit(cmd.Context(), image.Commit{Base: base, Layer: file, Config: cfg, Comment: message,
		CreatedBy: "lodge import " + source, Name: ref})
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", source, err)
	}
	return im, nil
}

// copyToStore keeps r in a file of the image store's (stdin is read
// twice: for the layer's digest and into the store).
func copyToStore(st *image.Store, r io.Reader) (string, error) {
	dir := filepath.Join(st.Dir, "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "import-*")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), f.Close()
}

// writeAtomically gives write the file path (made whole, by a rename, or
// not at all) or, with no path, stdout, which must not be a terminal.
func writeAtomically(stdout io.Writer, path string, write func(io.Writer) error) error {
	if path == "" {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return errors.New("refusing to write a tar to a terminal: give -o FILE or redirect stdout")
		}
		return write(stdout)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
