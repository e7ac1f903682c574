package cli

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/imagefs"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/state"
)

func addCpCommand(root *cobra.Command, a *app) {
	root.AddCommand(&cobra.Command{
		Use:   "cp SRC DST   (one of them CONTAINER:PATH)",
		Short: "copy files between the host and a container, running or not (a copy into one, or out of a running one, needs tar in it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := args[0], args[1]
			if name, p, ok := ctrPath(src); ok {
				return a.cpFrom(cmd, name, p, dst)
			}
			if name, p, ok := ctrPath(dst); ok {
				return a.cpTo(cmd, src, name, p)
			}
			return errors.New("cp: one of SRC and DST must be CONTAINER:PATH")
		},
	})
}

// ctrPath splits CONTAINER:PATH (a host path never has the colon first).
func ctrPath(s string) (name, p string, ok bool) {
	name, p, ok = strings.Cut(s, ":")
	if !ok || name == "" || strings.Contains(name, "/") || !path.IsAbs(p) {
		return "", "", false
	}
	return name, p, true
}

// execIn runs args in the container with the given stdin and stdout.
// lodge-runtime hands the process this process's own descriptors 0 and 1
// (not Go readers), so they are pipes for the call.
func (a *app) execIn(cmd *cobra.Command, r *ctrRecord, in io.Reader, out io.Writer, args ...string) error {
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	go func() {
		io.Copy(inW, in)
		inW.Close()
	}()
	copied := make(chan struct{})
	go func() {
		io.Copy(out, outR)
		outR.Close()
		close(copied)
	}()
	savedIn, savedOut := os.Stdin, os.Stdout
	os.Stdin, os.Stdout = inR, outW
	code, msg := a.runtime(cmd.Context(), outW, append([]string{"exec", r.ID}, args...)...)
	os.Stdin, os.Stdout = savedIn, savedOut
	inR.Close()
	outW.Close()
	<-copied
	if code != 0 {
		return fmt.Errorf("%s in %s: exit %d: %s", args[0], r.Name, code, msg)
	}
	return nil
}

// cpTo copies a host file or directory into the container, under dst if
// dst is a directory there, else as dst.
func (a *app) cpTo(cmd *cobra.Command, src, name, dst string) error {
	r, err := findCtr(name)
	if err != nil {
		return err
	}
	// A created container's guest has its root ready (docker's create,
	// cp, start); an ended one's writable layer is written in a VM made
	// for that, and its next start finds the files.
	if st, running := r.status(); !running && st != "created" {
		return a.inEndedVM(cmd.Context(), r, "copy into", func(id string) error {
			spare := *r
			spare.ID = id
			return a.cpInto(cmd, &spare, src, dst)
		})
	}
	return a.cpInto(cmd, r, src, dst)
}

// cpInto copies src into the root of r, whose guest runs (its container
// created, running or paused), through tar there.
func (a *app) cpInto(cmd *cobra.Command, r *ctrRecord, src, dst string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	base := filepath.Base(dst)
	dir := path.Dir(dst)
	// Copy into an existing directory under the source's name.
	if a.execIn(cmd, r, strings.NewReader(""), io.Discard, "test", "-d", dst) == nil {
		base, dir = filepath.Base(src), dst
	}
	root := filepath.Clean(src)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return addTarEntry(tw, p, path.Join(base, filepath.ToSlash(rel)), fi)
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return a.execIn(cmd, r, &buf, io.Discard, "tar", "-x", "-f", "-", "-C", dir)
}

// cpFrom copies a path of the container to the host: through tar in a
// running container; from the whole root of one that is not running, as
// export reads it (an ended one's writable layer in a VM made to read
// it), links in the path's directories followed as the image has them.
func (a *app) cpFrom(cmd *cobra.Command, name, src, dst string) error {
	r, err := findCtr(name)
	if err != nil {
		return err
	}
	if _, running := r.status(); running {
		var buf bytes.Buffer
		if err := a.execIn(cmd, r, strings.NewReader(""), &buf, "tar", "-c", "-f", "-", "-C", path.Dir(src), path.Base(src)); err != nil {
			return err
		}
		return unpackCopy(tar.NewReader(&buf), src, dst, func(n string) (string, bool) { return n, true })
	}
	if src, err = resolveInImage(r, src); err != nil {
		return err
	}
	if src == "/" {
		return errors.New("cp: the root of a container that is not running: lodge export writes it")
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- a.changes(cmd.Context(), r, false, true, func(rd io.Reader) error {
			_, err := layers.ReadChanges(rd, pw)
			pw.CloseWithError(err)
			return err
		})
		pw.Close()
	}()
	found := false
	err = unpackCopy(tar.NewReader(pr), src, dst, func(n string) (string, bool) {
		p := path.Clean("/" + n)
		if p != src && !strings.HasPrefix(p, src+"/") {
			return "", false
		}
		found = true
		return strings.TrimPrefix(strings.TrimPrefix(p, path.Dir(src)), "/"), true
	})
	io.Copy(io.Discard, pr) // the reading VM ends only once its stream is read
	pr.Close()
	if cerr := <-done; err == nil && cerr != nil {
		err = fmt.Errorf("cp: container %s: %w", r.Name, cerr)
	}
	if err == nil && !found {
		err = fmt.Errorf("cp: container %s has no %s", r.Name, src)
	}
	return err
}

// resolveInImage follows the links in p's directories as the container's
// image has them (not the last component's, as tar archives a link).
func resolveInImage(r *ctrRecord, p string) (string, error) {
	var bl layers.BundleLayers
	if err := state.Read(filepath.Join(bundleDir(r.ID), layers.BundleFile), &bl); err != nil {
		return "", fmt.Errorf("container %s: its layers: %w", r.Name, err)
	}
	files, err := imagefs.Open(bl.Images)
	if err != nil {
		return "", err
	}
	defer files.Close()
	return files.Resolve(p, false)
}

// unpackCopy writes the entries of tr that name keeps (renaming them
// relative to src's directory) below dst, as cp writes a copy: into dst
// if it is a directory, else as dst. What the container sends is
// hostile input: every entry is written through an os.Root of the
// destination, so no name or link in it reaches outside.
func unpackCopy(tr *tar.Reader, src, dst string, name func(string) (string, bool)) error {
	into, rename := dst, ""
	if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
		into, rename = filepath.Dir(dst), filepath.Base(dst)
	}
	root, err := os.OpenRoot(into)
	if err != nil {
		return err
	}
	defer root.Close()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cp: the container's archive: %w", err)
		}
		n, ok := name(h.Name)
		if !ok {
			continue
		}
		p := path.Clean(n)
		if rename != "" {
			first, rest, _ := strings.Cut(p, "/")
			if first == path.Base(src) {
				p = path.Join(rename, rest)
			}
		}
		if p == "." || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("cp: the container sent an entry outside the copy: %q", h.Name)
		}
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(p, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := root.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, p); err != nil {
				return err
			}
		default:
			// Devices, fifos, hard links: not copied to the host.
		}
	}
}
