// Package imagefs reads an image's files as its container sees them:
// the merged view of its layers' erofs images.
package imagefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/erofs/go-erofs"
)

// Layer is a layer's erofs image: what go-erofs' reader offers beyond
// fs.FS.
type Layer interface {
	fs.FS
	Lstat(name string) (fs.FileInfo, error)
	ReadLink(name string) (string, error)
}

// Union is the merged view of an image's layers, as overlayfs shows it
// in the guest: the layers' erofs images (made by the host from the
// layer tars), topmost first; a whiteout (a 0/0 character device) hides
// a path of the layers below, and an opaque directory
// (trusted.overlay.opaque=y) or a non-directory hides everything of the
// layers below it. Paths are absolute.
type Union struct {
	layers []Layer
	files  []*os.File
}

// Open opens the layer images at paths (topmost first).
func Open(paths []string) (*Union, error) {
	u := &Union{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			u.Close()
			return nil, err
		}
		u.files = append(u.files, f)
		img, err := erofs.Open(f)
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("layer image %s: %w", p, err)
		}
		ei, ok := img.(Layer)
		if !ok {
			u.Close()
			return nil, errors.New("go-erofs' image has no Lstat")
		}
		u.layers = append(u.layers, ei)
	}
	return u, nil
}

func (u *Union) Close() error {
	for _, f := range u.files {
		f.Close()
	}
	return nil
}

// Rel is p as fs.FS names it.
func Rel(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

func Whiteout(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*erofs.Stat)
	return ok && st.Rdev == 0
}

func Opaque(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*erofs.Stat)
	return ok && fi.IsDir() && st.Xattrs["trusted.overlay.opaque"] == "y"
}

// blocks reports whether layer l hides p of the layers below it through
// one of p's ancestors.
func blocks(l Layer, p string) bool {
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	for i := 1; i < len(parts); i++ {
		fi, err := l.Lstat(strings.Join(parts[:i], "/"))
		if err != nil {
			return false // the layer has nothing at or below it
		}
		if Whiteout(fi) || !fi.IsDir() || Opaque(fi) {
			return true
		}
	}
	return false
}

// Lstat finds p; it returns the layer that has it.
func (u *Union) Lstat(p string) (fs.FileInfo, Layer, error) {
	if Rel(p) == "." {
		return nil, nil, fs.ErrInvalid // the root is not an entry of a layer
	}
	for _, l := range u.layers {
		fi, err := l.Lstat(Rel(p))
		if err == nil {
			if Whiteout(fi) {
				break
			}
			return fi, l, nil
		}
		if blocks(l, p) {
			break
		}
	}
	return nil, nil, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
}

// IsDir reports whether p is a directory (the root is one).
func (u *Union) IsDir(p string) bool {
	if Rel(p) == "." {
		return true
	}
	fi, _, err := u.Lstat(p)
	return err == nil && fi.IsDir()
}

// Entry is one name in a directory of the union.
type Entry struct {
	Name  string
	Layer Layer
}

// ReadDir lists directory p, sorted.
func (u *Union) ReadDir(p string) ([]Entry, error) {
	seen := map[string]bool{}
	var out []Entry
	found := Rel(p) == "."
	for _, l := range u.layers {
		fi, err := l.Lstat(Rel(p))
		if Rel(p) != "." {
			if err != nil {
				if blocks(l, p) {
					break
				}
				continue
			}
			if !fi.IsDir() {
				break // a whiteout or a file hides the layers below
			}
		}
		found = true
		ents, err := fs.ReadDir(l, Rel(p))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if seen[e.Name()] {
				continue
			}
			seen[e.Name()] = true
			if info, err := e.Info(); err == nil && Whiteout(info) {
				continue
			}
			out = append(out, Entry{e.Name(), l})
		}
		if fi != nil && Opaque(fi) {
			break
		}
	}
	if !found {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: fs.ErrNotExist}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Resolve follows the symbolic links of p within the union's root, as
// a path inside the container resolves (a link's target never leaves
// the root); the last component is followed only with followLast.
func (u *Union) Resolve(p string, followLast bool) (string, error) {
	rest := strings.Split(path.Clean("/"+p), "/")[1:]
	out := "/"
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			out = path.Dir(out)
			continue
		}
		next := path.Join(out, c)
		if len(rest) == 0 && !followLast {
			return next, nil
		}
		fi, l, err := u.Lstat(next)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			out = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := l.ReadLink(Rel(next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			out = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return out, nil
}

// ReadFile reads file p, its links followed within the root.
func (u *Union) ReadFile(p string) ([]byte, error) {
	r, err := u.Resolve(p, true)
	if err != nil {
		return nil, err
	}
	fi, l, err := u.Lstat(r)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: p, Err: errors.New("not a regular file")}
	}
	return fs.ReadFile(l, Rel(r))
}
