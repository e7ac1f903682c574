package build

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// RUN --mount, as BuildKit's Dockerfile frontend reads it:
//
//	bind    a file or directory of the context (or, with from=, of a stage or
//	        an image), copied for the step (.dockerignore applied), so that
//	        what a rw mount writes goes nowhere; its content and metadata but
//	        for times are part of the step's cache key
//	cache   a directory kept on the host between builds, by id (default: the
//	        target), in <store>/build-mounts; sharing=shared (default),
//	        locked (one step at a time) or private (a step that finds it in
//	        use gets an empty one of its own); not part of the key
//	tmpfs   an empty tmpfs (size=)
//	secret  a secret of `lodge build --secret`, as a read-only file (default
//	        /run/secrets/ID) or an environment variable (env=); neither its
//	        content nor the mount is in the key or the image
//	ssh     refused: no ssh agent is forwarded
//
// Whatever a step's mounts make on the host goes when the step ends
// (cache directories stay). The guest's agent leaves the mount points out
// of the step's layer.

// stepMounts is what a RUN's mounts give its step.
type stepMounts struct {
	mounts    []Mount
	secretEnv []string
	key       []string // parts of the step's cache key
	release   []func()
}

func (sm *stepMounts) close() {
	for i := len(sm.release) - 1; i >= 0; i-- {
		sm.release[i]()
	}
	sm.release = nil
}

// runMounts makes what RUN c's --mount flags ask for.
func (bd *build) runMounts(ctx context.Context, st *stage, c *instructions.RunCommand) (*stepMounts, error) {
	sm := &stepMounts{}
	for _, m := range instructions.GetMounts(c) {
		err := bd.runMount(ctx, st, m, sm)
		if err != nil {
			sm.close()
			return nil, fmt.Errorf("--mount=type=%s: %w", m.Type, err)
		}
	}
	return sm, nil
}

func (bd *build) runMount(ctx context.Context, st *stage, m *instructions.Mount, sm *stepMounts) error {
	if m.Type == instructions.MountTypeSecret {
		return bd.secretMount(st, m, sm)
	}
	if m.Type == instructions.MountTypeSSH {
		return errors.New("not supported by lodge build (no ssh agent is forwarded to a RUN); fetch with a secret instead")
	}
	if m.Target == "" {
		return errors.New("a target is needed")
	}
	target := st.absPath(m.Target)
	if target == "/" {
		return errors.New("the target cannot be /")
	}
	switch m.Type {
	case instructions.MountTypeBind:
		return bd.bindMount(ctx, m, target, sm)
	case instructions.MountTypeCache:
		return bd.cacheMount(ctx, m, target, sm)
	case instructions.MountTypeTmpfs:
		sm.mounts = append(sm.mounts, Mount{Type: "tmpfs", Target: target, Size: m.SizeLimit})
		sm.key = append(sm.key, "tmpfs", target, strconv.FormatInt(m.SizeLimit, 10))
		return nil
	}
	return errors.New("not supported by lodge build")
}

// bindMount copies the mount's source for the step.
func (bd *build) bindMount(ctx context.Context, m *instructions.Mount, target string, sm *stepMounts) error {
	src := m.Source
	if src == "" {
		src = "/"
	}
	var s source
	o := copyOpts{}
	p := path.Clean("/" + src)
	if m.From != "" {
		fu, err := bd.fromSource(ctx, m.From)
		if err != nil {
			return err
		}
		defer fu.Close()
		if p, err = fu.Resolve(p, true); err != nil {
			return err
		}
		s, o.fromStage = unionSource{fu}, true
	} else {
		if strings.HasPrefix(path.Clean(src), "..") {
			return fmt.Errorf("source %s: outside the build context", src)
		}
		root, err := os.OpenRoot(bd.o.Context)
		if err != nil {
			return err
		}
		defer root.Close()
		s, o.skip = contextSource{root}, bd.ignored
		if p != "/" {
			if bd.ignored(p, false) {
				return fmt.Errorf("source %s: excluded by .dockerignore", src)
			}
			if fi, err := s.lstat(p); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				if p, err = bd.followInContext(p); err != nil {
					return err
				}
			}
		}
	}
	lb := newLayer(&imagefs.Union{}, bd.tmpDir)
	fi, err := s.lstat(p)
	if err != nil {
		return fmt.Errorf("source %s: %w", src, errNoMatch)
	}
	file, dst := "", "/" // file: the source's name, when it is no directory
	if !fi.IsDir() {
		file = path.Base(p)
		dst += file
	}
	if err := lb.copyTree(s, p, dst, o); err != nil {
		return err
	}
	content, err := lb.digestOf(false)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(bd.tmpDir, "mount-")
	if err != nil {
		return err
	}
	sm.release = append(sm.release, func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := lb.materialise(dir); err != nil {
		return err
	}
	host := dir
	if file != "" {
		host = filepath.Join(dir, file)
	}
	sm.mounts = append(sm.mounts, Mount{Type: "bind", Source: host, Target: target, ReadOnly: m.ReadOnly})
	sm.key = append(sm.key, "bind", target, strconv.FormatBool(m.ReadOnly), content)
	return nil
}

// materialise writes the layer's files, directories and links below dir
// (devices and fifos, which only a stage may hold, are left out).
func (lb *layerBuilder) materialise(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, p := range lb.sorted() {
		e, r := lb.entries[p], imagefs.Rel(p)
		h := e.hdr
		switch h.Typeflag {
		case tar.TypeDir:
			err = root.Mkdir(r, 0o700)
		case tar.TypeReg:
			err = writeEntry(root, r, e)
		case tar.TypeSymlink:
			if err = root.Symlink(h.Linkname, r); err == nil {
				err = root.Lchown(r, h.Uid, h.Gid)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			continue
		default:
			continue
		}
		if err == nil {
			err = root.Lchown(r, h.Uid, h.Gid)
		}
		if err == nil {
			mode := fs.FileMode(h.Mode).Perm()
			if h.Mode&0o1000 != 0 {
				mode |= fs.ModeSticky
			}
			err = root.Chmod(r, mode)
		}
		if err == nil && h.Typeflag == tar.TypeReg {
			err = root.Chtimes(r, h.ModTime, h.ModTime)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

func writeEntry(root *os.Root, r string, e *pending) error {
	f, err := root.OpenFile(r, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if e.open != nil {
		rc, err := e.open()
		if err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(f, rc)
		rc.Close()
		if err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// CacheMountsDir is where RUN --mount=type=cache directories are kept: one
// directory per cache id, named by the id's digest, holding
//
//	id     the cache's id
//	data   what RUN steps mount
//	lock   flock: shared by each step that mounts it, exclusive for
//	       sharing=locked and private, and for lodge builder prune
func CacheMountsDir(storeDir string) string { return filepath.Join(storeDir, "build-mounts") }

// cacheMount mounts the cache of the mount's id, made if it is new.
func (bd *build) cacheMount(ctx context.Context, m *instructions.Mount, target string, sm *stepMounts) error {
	if m.From != "" || m.Source != "" {
		return errors.New("from= and source= are not supported by lodge build")
	}
	id := m.CacheID
	if id == "" {
		id = target
	}
	mode, uid, gid := ownerOf(m, 0o755)
	sum := sha256.Sum256([]byte(id))
	dir := filepath.Join(CacheMountsDir(bd.b.Store.Dir), hex.EncodeToString(sum[:16]))
	lock, err := lockCache(ctx, dir, m.CacheSharing)
	if err != nil {
		return err
	}
	data := filepath.Join(dir, "data")
	if lock == nil {
		// private, and in use: an empty one of this step's own.
		if data, err = os.MkdirTemp(bd.tmpDir, "cache-"); err != nil {
			return err
		}
		d := data
		sm.release = append(sm.release, func() { os.RemoveAll(d) })
		if err := ownDir(data, mode, uid, gid); err != nil {
			return err
		}
	} else {
		sm.release = append(sm.release, func() { lock.Close() })
		if err := os.WriteFile(filepath.Join(dir, "id"), []byte(id), 0o600); err != nil {
			return err
		}
		if err := os.Mkdir(data, 0o700); err == nil {
			if err := ownDir(data, mode, uid, gid); err != nil {
				os.Remove(data)
				return err
			}
		} else if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	sm.mounts = append(sm.mounts, Mount{Type: "bind", Source: data, Target: target, ReadOnly: m.ReadOnly})
	sm.key = append(sm.key, "cache", id, target, strconv.FormatBool(m.ReadOnly))
	return nil
}

// ownerOf is a mount's mode= (else def), uid= and gid= (else root's).
func ownerOf(m *instructions.Mount, def fs.FileMode) (mode fs.FileMode, uid, gid int) {
	mode = def
	if m.Mode != nil {
		mode = fs.FileMode(*m.Mode).Perm()
	}
	if m.UID != nil {
		uid = int(*m.UID)
	}
	if m.GID != nil {
		gid = int(*m.GID)
	}
	return mode, uid, gid
}

func ownDir(dir string, mode fs.FileMode, uid, gid int) error {
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// lockCache takes the lock of the cache in dir as sharing asks, making
// dir if it is missing; nil (and no error) is a private cache in use.
// A lock taken on a file that a prune removed meanwhile is taken again.
func lockCache(ctx context.Context, dir string, sharing instructions.ShareMode) (*os.File, error) {
	for {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		lp := filepath.Join(dir, "lock")
		var f *os.File
		var err error
		switch sharing {
		case instructions.MountSharingLocked:
			f, err = filelock.LockFile(ctx, lp, true)
		case instructions.MountSharingPrivate:
			if f, err = filelock.LockFile(ctx, lp, false); errors.Is(err, filelock.ErrBusy) {
				return nil, nil
			}
		default:
			f, err = filelock.SharedFile(ctx, lp, true)
		}
		if err != nil {
			return nil, err
		}
		held, err1 := f.Stat()
		now, err2 := os.Stat(lp)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// CacheMount is one RUN --mount=type=cache directory.
type CacheMount struct {
	ID   string
	Size int64 // bytes of its files
	dir  string
}

// CacheMounts lists the RUN cache mounts of the store at storeDir.
func CacheMounts(storeDir string) ([]CacheMount, error) {
	base := CacheMountsDir(storeDir)
	ents, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []CacheMount
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		id, _ := os.ReadFile(filepath.Join(dir, "id"))
		out = append(out, CacheMount{ID: string(id), Size: dirSize(filepath.Join(dir, "data")), dir: dir})
	}
	return out, nil
}

// PruneCacheMounts removes the cache mounts of the store at storeDir that
// no build uses; it returns what it removed.
func PruneCacheMounts(storeDir string) ([]CacheMount, error) {
	all, err := CacheMounts(storeDir)
	if err != nil {
		return nil, err
	}
	var out []CacheMount
	var errs []error
	for _, cm := range all {
		f, err := filelock.LockFile(context.Background(), filepath.Join(cm.dir, "lock"), false)
		if err != nil {
			continue // in use (or not a cache's): left
		}
		err = os.RemoveAll(cm.dir) // the lock file too: a step waiting on it takes a new one
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("cache mount %s: %w", cm.ID, err))
			continue
		}
		out = append(out, cm)
	}
	return out, errors.Join(errs...)
}

// dirSize is the bytes of the regular files below dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// secretMount gives the step a secret of lodge build --secret.
func (bd *build) secretMount(st *stage, m *instructions.Mount, sm *stepMounts) error {
	id := m.CacheID
	if id == "" {
		id = m.Source
	}
	if id == "" {
		id = path.Base(m.Target)
	}
	target := m.Target
	if target == "" && m.Env == nil {
		target = "/run/secrets/" + id
	}
	env := ""
	if m.Env != nil {
		if env = *m.Env; env == "" {
			env = id
		}
	}
	sm.key = append(sm.key, "secret", id, target, env)
	sec, ok := bd.o.Secrets[id]
	if !ok {
		if m.Required {
			return fmt.Errorf("the secret %s is required: give it with lodge build --secret id=%s,src=FILE (or env=VARIABLE)", id, id)
		}
		return nil // as BuildKit: a secret not given is not mounted
	}
	data, err := sec.read()
	if err != nil {
		return fmt.Errorf("the secret %s: %w", id, err)
	}
	if env != "" {
		sm.secretEnv = append(sm.secretEnv, env+"="+string(data))
	}
	if target == "" {
		return nil
	}
	dir, err := os.MkdirTemp(bd.tmpDir, "secret-")
	if err != nil {
		return err
	}
	sm.release = append(sm.release, func() { os.RemoveAll(dir) })
	f := filepath.Join(dir, "secret")
	if err := os.WriteFile(f, data, 0o400); err != nil {
		return err
	}
	mode, uid, gid := ownerOf(m, 0o400)
	if err := os.Chown(f, uid, gid); err != nil {
		return err
	}
	if err := os.Chmod(f, mode); err != nil {
		return err
	}
	sm.mounts = append(sm.mounts, Mount{Type: "bind", Source: f, Target: st.absPath(target), ReadOnly: true})
	return nil
}

// read is the secret's content.
func (s Secret) read() ([]byte, error) {
	if s.Env != "" {
		v, ok := os.LookupEnv(s.Env)
		if !ok {
			return nil, fmt.Errorf("the environment variable %s is not set", s.Env)
		}
		return []byte(v), nil
	}
	return os.ReadFile(s.File)
}
