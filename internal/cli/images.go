package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"text/template"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
)

func (a *app) images() *image.Store {
	return &image.Store{Dir: a.cfg.Images.Dir, Layers: &layers.Store{Dir: a.cfg.Layers.Dir, Log: a.log}, Log: a.log}
}

func addImageCommands(root *cobra.Command, a *app) {
	var platform string
	pull := &cobra.Command{
		Use:   "pull [--platform os/arch] IMAGE",
		Short: "fetch an image from its registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.pull(cmd, args[0], platform)
			return err
		},
	}
	pull.Flags().StringVar(&platform, "platform", "linux/amd64", "platform of a multi-platform image")

	var quiet bool
	var format string
	var filters []string
	ls := &cobra.Command{
		Use:   "images [-q] [--format table|json|TEMPLATE] [-f KEY=VALUE]... [REPOSITORY[:TAG]]",
		Short: "list images",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseImageFilter(strings.Join(args, ""), filters, func(n string) (*image.Image, error) { return a.images().Find(normalise(n)) })
			if err != nil {
				return err
			}
			return a.listImages(cmd.OutOrStdout(), quiet, format, f)
		},
	}
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "image IDs only")
	ls.Flags().StringVar(&format, "format", "table", "table, json or a Go template")
	ls.Flags().StringArrayVarP(&filters, "filter", "f", nil, "only images with dangling=true|false, reference=REPOSITORY[:TAG] (globs), label=KEY[=VALUE], before=IMAGE or since=IMAGE")

	rmi := &cobra.Command{
		Use:   "rmi IMAGE...",
		Short: "remove images (their names; unreferenced content goes with `image prune`)",
		Args:  cobra.MinimumNArgs(1),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.removeImages(cmd, args) },
	}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "remove content no image uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			blobs, lays, freed, err := a.images().Prune(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %d blobs and %d layer images, %s freed\n", blobs, lays, humanSize(freed))
			return nil
		},
	}
	var input string
	load := &cobra.Command{
		Use:   "load -i FILE",
		Short: "load images from a tar (docker save's format, or an OCI layout)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r io.Reader = a.env.In
			if input != "" && input != "-" {
				f, err := os.Open(input)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			ims, err := a.images().Load(cmd.Context(), r)
			for _, im := range ims {
				fmt.Fprintf(cmd.OutOrStdout(), "Loaded image: %s\n", displayName(im.Name))
				emitImage("load", "sha256:"+im.ConfigDigest.Hex, im.Name)
			}
			return err
		},
	}
	load.Flags().StringVarP(&input, "input", "i", "", "tar file to read (default stdin)")
	var output string
	save := &cobra.Command{
		Use:   "save -o FILE IMAGE...",
		Short: "write images to a tar (docker save's format)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var w io.Writer = cmd.OutOrStdout()
			if output != "" && output != "-" {
				tmp := output + ".tmp"
				f, err := os.Create(tmp)
				if err != nil {
					return err
				}
				if err := a.images().Save(cmd.Context(), normaliseAll(args), f); err != nil {
					f.Close()
					os.Remove(tmp)
					return err
				}
				if err := f.Close(); err != nil {
					os.Remove(tmp)
					return err
				}
				return os.Rename(tmp, output)
			}
			return a.images().Save(cmd.Context(), normaliseAll(args), w)
		},
	}
	save.Flags().StringVarP(&output, "output", "o", "", "tar file to write (default stdout)")

	imageCmd := &cobra.Command{Use: "image", Short: "manage images"}
	imageCmd.AddCommand(cloneCmd(pull), cloneCmd(ls), cloneCmd(rmi), prune, cloneCmd(load), cloneCmd(save))
	root.AddCommand(pull, ls, rmi, load, save, imageCmd)
	addRegistryCommands(root, imageCmd, a)
}

// cloneCmd makes a second command with the same behaviour and flags (for
// `lodge image pull` beside `lodge pull`).
func cloneCmd(c *cobra.Command) *cobra.Command {
	d := &cobra.Command{Use: c.Use, Aliases: c.Aliases, Short: c.Short, Args: c.Args, RunE: c.RunE}
	if strings.HasPrefix(c.Use, "images") {
		d.Use = "ls" + strings.TrimPrefix(c.Use, "images")
	}
	if strings.HasPrefix(c.Use, "rmi") {
		d.Use = "rm" + strings.TrimPrefix(c.Use, "rmi")
		d.Aliases = nil
	}
	d.Flags().AddFlagSet(c.Flags())
	return d
}

func normaliseAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = normalise(n)
	}
	return out
}

// normalise turns what a user typed into the store's name when it parses
// as one (busybox -> index.docker.io/library/busybox:latest); an image ID
// stays as it is.
func normalise(s string) string {
	if ref, err := image.ParseName(s); err == nil && !looksLikeID(s) {
		return image.StoreName(ref)
	}
	return s
}

func looksLikeID(s string) bool {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) < 12 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}

// displayName shows a stored name as docker does (docker.io/library/ and
// index.docker.io/ left out).
func displayName(n string) string {
	for _, p := range []string{"index.docker.io/library/", "index.docker.io/", "docker.io/library/", "docker.io/"} {
		if rest, ok := strings.CutPrefix(n, p); ok {
			return rest
		}
	}
	return n
}

func splitName(n string) (repo, tag string) {
	n = displayName(n)
	if i := strings.Index(n, "@"); i >= 0 {
		return n[:i], "<none>"
	}
	if i := strings.LastIndex(n, ":"); i > strings.LastIndex(n, "/") {
		return n[:i], n[i+1:]
	}
	return n, "latest"
}

func (a *app) pull(cmd *cobra.Command, name, platform string) (*image.Image, error) {
	ref, err := image.ParseName(name)
	if err != nil {
		return nil, err
	}
	var plat *v1.Platform
	if platform != "" {
		if plat, err = v1.ParsePlatform(platform); err != nil {
			return nil, fmt.Errorf("--platform %q: %w", platform, err)
		}
	}
	out := cmd.ErrOrStderr()
	fmt.Fprintf(out, "Pulling %s\n", displayName(ref.Name()))
	prog := newProgress(out)
	im, err := a.images().Pull(cmd.Context(), ref, image.PullOptions{Platform: plat, Progress: prog})
	prog.wait()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "Digest: %s\nStatus: %s\n", im.Ref.Manifest, displayName(im.Name))
	emitImage("pull", displayName(im.Name), im.Name)
	return im, nil
}

type imageRow struct {
	Repository string `json:"Repository"`
	Tag        string `json:"Tag"`
	ID         string `json:"ID"`
	Created    string `json:"CreatedSince"`
	CreatedAt  string `json:"CreatedAt"`
	Size       string `json:"Size"`
	Digest     string `json:"Digest"`
}

func (a *app) listImages(w io.Writer, quiet bool, format string, f imageFilter) error {
	st := a.images()
	refs, err := st.List()
	if err != nil {
		return err
	}
	var rows []imageRow
	for _, r := range refs {
		im, err := st.Open(r)
		if err != nil {
			a.log.Warn("unreadable image", "name", r.Name, "err", err)
			continue
		}
		repo, tag := splitName(r.Name)
		if !f.match(repo, tag, im) {
			continue
		}
		created := im.Config.Created.Time
		rows = append(rows, imageRow{Repository: repo, Tag: tag, ID: im.ConfigDigest.Hex[:12],
			Created: since(created), CreatedAt: created.Format(time.RFC3339), Size: humanSize(im.Size()), Digest: r.Manifest.String()})
	}
	if quiet {
		seen := map[string]bool{}
		for _, r := range rows {
			if !seen[r.ID] {
				seen[r.ID] = true
				fmt.Fprintln(w, r.ID)
			}
		}
		return nil
	}
	return printList(w, rows, format, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE", func(r imageRow) string {
		return strings.Join([]string{r.Repository, r.Tag, r.ID, r.Created, r.Size}, "\t")
	})
}

// printList prints rows as docker's --format says: "json", one object a
// line; "table" (or nothing), header and a tab-separated line a row; else
// a Go template run on each row.
func printList[T any](w io.Writer, rows []T, format, header string, line func(T) string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	case "", "table":
		tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, r := range rows {
			fmt.Fprintln(tw, line(r))
		}
		return tw.Flush()
	}
	t, err := template.New("format").Parse(strings.TrimPrefix(format, "table "))
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	for _, r := range rows {
		if err := t.Execute(w, r); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	return nil
}

func (a *app) removeImages(cmd *cobra.Command, args []string) error {
	st := a.images()
	var errs []error
	for _, n := range args {
		im, err := st.Find(normalise(n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := st.Untag(cmd.Context(), im.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Untagged: %s\n", displayName(im.Name))
		emitImage("untag", "sha256:"+im.ConfigDigest.Hex, im.Name)
	}
	return errors.Join(errs...)
}

func since(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return humanDuration(time.Since(t)) + " ago"
}

// humanDuration says a duration as docker does ("3 seconds", "About a
// minute", "2 hours").
func humanDuration(d time.Duration) string {
	switch s := int(d.Seconds()); {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", s)
	}
	switch m := int(d.Minutes()); {
	case m == 1:
		return "About a minute"
	case m < 60:
		return fmt.Sprintf("%d minutes", m)
	}
	switch h := int(d.Hours()); {
	case h == 1:
		return "About an hour"
	case h < 48:
		return fmt.Sprintf("%d hours", h)
	case h < 24*7*2:
		return fmt.Sprintf("%d days", h/24)
	case h < 24*30*3:
		return fmt.Sprintf("%d weeks", h/24/7)
	case h < 24*365*2:
		return fmt.Sprintf("%d months", h/24/30)
	default:
		return fmt.Sprintf("%d years", h/24/365)
	}
}

func humanSize(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "kB", "MB", "GB"} {
		if f < 1000 {
			if u == "B" {
				return fmt.Sprintf("%d%s", n, u)
			}
			return fmt.Sprintf("%.3g%s", f, u)
		}
		f /= 1000
	}
	return fmt.Sprintf("%.3gTB", f)
}

// progress shows a pull: a bar per layer on a terminal, a line per layer
// otherwise.
type progress struct {
	w    io.Writer
	p    *mpb.Progress // nil: not a terminal
	mu   sync.Mutex
	bars []*mpb.Bar
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if isTerminal(w) {
		p.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40))
	}
	return p
}

func (p *progress) Layer(d v1.Hash, size int64) (io.Writer, func(string)) {
	short := d.Hex[:12]
	if p.p == nil {
		return io.Discard, func(status string) { fmt.Fprintf(p.w, "%s: %s (%s)\n", short, status, humanSize(size)) }
	}
	bar := p.p.AddBar(size,
		mpb.PrependDecorators(decor.Name(short+": "), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.OnComplete(decor.Percentage(), "done")))
	p.mu.Lock()
	p.bars = append(p.bars, bar)
	p.mu.Unlock()
	pw, _ := bar.ProxyWriter(io.Discard)
	return pw, func(status string) {
		if status == "exists" || status == "downloaded" {
			bar.SetCurrent(size)
		}
		bar.Abort(false)
	}
}

func (p *progress) wait() {
	if p.p != nil {
		p.p.Wait()
	}
}
