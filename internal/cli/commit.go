package cli

// lodge commit and lodge diff: a container's changes, read from its
// writable layer by its guest (docs/architecture.md, "A container's
// changes"). The host never mounts that layer: a running container's own
// VM sends it; an ended container's layer is read by a VM started for it
// (the container created again from its bundle, never started).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/build"
	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/runtimecli"
	"github.com/lodgeruntime/lodge/internal/state"
)

func addCommitCommands(root *cobra.Command, a *app) {
	var author, message string
	var changes []string
	var pause bool
	commit := &cobra.Command{
		Use:   "commit [flags] CONTAINER [REPOSITORY[:TAG]]",
		Short: "make an image of a container's changes (its writable layer) on its image",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			ref, err := tagName(args[1:])
			if err != nil {
				return err
			}
			im, err := a.commit(cmd.Context(), r, ref, commitOpts{author: author, message: message, changes: changes, pause: pause})
			if err != nil {
				return err
			}
			r.emit("commit", "comment", message, "imageID", im.ConfigDigest.String(), "imageRef", displayName(im.Name))
			fmt.Fprintln(cmd.OutOrStdout(), im.ConfigDigest.String())
			return nil
		},
	}
	f := commit.Flags()
	f.SetInterspersed(false)
	f.StringVarP(&author, "author", "a", "", `author (e.g. "Jane Doe <jane@example.com>")`)
	f.StringVarP(&message, "message", "m", "", "commit message")
	f.StringArrayVarP(&changes, "change", "c", nil, "a Dockerfile instruction for the image's config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL")
	f.BoolVarP(&pause, "pause", "p", true, "freeze the container while its changes are read")
	diff := &cobra.Command{
		Use:   "diff CONTAINER",
		Short: "list a container's changes to its image's files: A added, C changed, D deleted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			var list []layers.Change
			err = a.changes(cmd.Context(), r, false, false, func(rd io.Reader) error {
				var err error
				list, err = layers.ReadChanges(rd, nil)
				return err
			})
			if err != nil {
				return err
			}
			for _, c := range list {
				fmt.Fprintln(cmd.OutOrStdout(), c)
			}
			return nil
		},
	}
	root.AddCommand(commit, diff)
}

// tagName is the store's name for the optional REPOSITORY[:TAG] of
// commit and import ("" if none was given).
func tagName(args []string) (string, error) {
	if len(args) == 0 {
		return "", nil
	}
	n, err := image.ParseName(args[0])
	if err != nil {
		return "", err
	}
	if strings.Contains(args[0], "@") {
		return "", fmt.Errorf("%q: an image made here is named by a tag, not a digest", args[0])
	}
	return image.StoreName(n), nil
}

type commitOpts struct {
	author, message string
	changes         []string
	pause           bool
}

// commit makes an image of r's changes on its image and names it ref
// ("": untagged).
func (a *app) commit(ctx context.Context, r *ctrRecord, ref string, o commitOpts) (*image.Image, error) {
	st := a.images()
	parent, err := st.Find(r.ImageID)
	if err != nil {
		return nil, fmt.Errorf("container %s: its image %s: %w", r.Name, displayName(r.Image), err)
	}
	cfg := parent.Config.Config
	if r.Config != nil {
		cfg = *r.Config.DeepCopy()
	}
	for _, c := range o.changes {
		if err := build.Change(&cfg, c); err != nil {
			return nil, fmt.Errorf("--change %q: %w", c, err)
		}
	}
	// Checked before the VM work: the store's tmp directory is where the
	// layer is written, on the store's own filesystem.
	tmpDir := filepath.Join(st.Dir, "tmp")
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(tmpDir, "commit-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	err = a.changes(ctx, r, o.pause, false, func(rd io.Reader) error {
		_, err := layers.ReadChanges(rd, f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return nil, err
	}
	base, err := st.V1(parent)
	if err != nil {
		return nil, err
	}
	return st.Commit(ctx, image.Commit{Base: base, Layer: f.Name(), Config: cfg, Author: o.author, Comment: o.message,
		CreatedBy: strings.Join(r.Command, " "), Name: ref})
}

// changes passes read the container's changes as its guest sends them.
// A running container is frozen meanwhile if pause says so (docker's
// default), and thawed after; an ended one is read by a VM of its own.
func (a *app) changes(ctx context.Context, r *ctrRecord, pause, whole bool, read func(io.Reader) error) error {
	st, running := r.status()
	if !running && st != "created" && st != "creating" {
		return a.changesOfEnded(ctx, r, whole, read)
	}
	if pause && st == "running" {
		if err := runtimeOp(a, "pause", r.ID); err != nil {
			return fmt.Errorf("container %s: %w", r.Name, err)
		}
		defer runtimeOp(a, "resume", r.ID)
	}
	return streamChanges(ctx, r.ID, whole, read)
}

// streamChanges hands read the changes (with whole, the whole root) of
// the runtime's container id.
func streamChanges(ctx context.Context, id string, whole bool, read func(io.Reader) error) error {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := read(pr)
		pr.CloseWithError(errors.New("the changes were not read to their end"))
		done <- err
	}()
	err := runtimecli.Changes(ctx, runtimeState, id, whole, pw)
	// A reader that gave up first (a name it refused) says why the copy
	// into its closed pipe failed; else the copy's error is the cause.
	select {
	case rerr := <-done:
		pw.CloseWithError(err)
		if rerr != nil {
			return rerr
		}
		return err
	default:
	}
	pw.CloseWithError(err)
	if rerr := <-done; err == nil {
		err = rerr
	}
	return err
}

// changesOfEnded reads an ended container's writable layer in a VM made
// for that (inEndedVM).
func (a *app) changesOfEnded(ctx context.Context, r *ctrRecord, whole bool, read func(io.Reader) error) error {
	return a.inEndedVM(ctx, r, "read", func(id string) error { return streamChanges(ctx, id, whole, read) })
}

// inEndedVM calls fn with the runtime id of a VM made for an ended
// container's writable layer (to read or to write it): the container is
// created again from a copy of its bundle (no network, no hooks; its
// writable layer linked in, kept) under the runtime id ID-changes, not
// started, and deleted after fn. Its monitor lock is held throughout, so
// that no start runs it at the same time. what is what fn does with the
// layer ("read", "copy into"), for errors.
func (a *app) inEndedVM(ctx context.Context, r *ctrRecord, what string, fn func(id string) error) (retErr error) {
	monitor, r, err := holdEnded(ctx, r)
	if err != nil {
		return err
	}
	defer monitor.Close()
	if st, running := r.status(); running || st == "created" {
		return fmt.Errorf("container %s started meanwhile: try again", r.Name)
	}
	bundle := bundleDir(r.ID)
	var bl layers.BundleLayers
	if err := state.Read(filepath.Join(bundle, layers.BundleFile), &bl); err != nil {
		return fmt.Errorf("container %s: its layers: %w", r.Name, err)
	}
	rw := filepath.Join(bundle, "lodge-rw.img")
	if _, err := os.Stat(rw); err != nil || !bl.KeepWritable {
		return fmt.Errorf("container %s has no writable layer kept (it never started?): nothing to %s", r.Name, what)
	}
	spec, err := readBundleSpec(bundle)
	if err != nil {
		return fmt.Errorf("container %s: its bundle: %w", r.Name, err)
	}
	tmp, err := os.MkdirTemp(ctrDir(r.ID), "changes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Mkdir(filepath.Join(tmp, "rootfs"), 0o755); err != nil {
		return err
	}
	if err := state.Write(filepath.Join(tmp, "config.json"), newSpecCopy(spec)); err != nil {
		return err
	}
	if err := state.Write(filepath.Join(tmp, layers.BundleFile), layers.BundleLayers{Images: bl.Images, KeepWritable: true}); err != nil {
		return err
	}
	if err := os.Link(rw, filepath.Join(tmp, "lodge-rw.img")); err != nil {
		return err
	}
	id := changesID(r)
	if _, err := runtimecli.Inspect(runtimeState, id); err == nil {
		runtimeOp(a, "delete", "--force", id) // left by a commit that was killed
	}
	if err := runtimecli.Create(runtimeState, filepath.Join(tmp, "runtime.log"), tmp, id, ""); err != nil {
		return fmt.Errorf("container %s: a VM to %s its writable layer: %w", r.Name, what, err)
	}
	defer func() {
		if err := runtimeOp(a, "delete", "--force", id); err != nil && retErr == nil {
			retErr = err
		}
	}()
	return fn(id)
}

// changesID is the runtime id of the VM that reads or writes an ended
// container's layer (inEndedVM).
func changesID(r *ctrRecord) string { return r.ID + "-changes" }

// newSpecCopy is the spec of the VM that reads an ended container's
// layer: the container's, with no network namespace to join (its last
// one is gone) and no hooks (its network's).
func newSpecCopy(s *specs.Spec) *specs.Spec {
	c := *s
	c.Hooks = nil
	if s.Linux != nil {
		l := *s.Linux
		l.Namespaces = nil
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				ns.Path = ""
			}
			l.Namespaces = append(l.Namespaces, ns)
		}
		c.Linux = &l
	}
	return &c
}
