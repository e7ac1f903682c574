// Package template keeps VM templates: booted guests saved once per VM
// shape so that sandboxes start as clones of them instead of booting a
// kernel (see docs/architecture.md, "Templates and clones"). The store
// keys, builds (once, under a lock), validates, lists and removes them; how
// a template VM is booted and saved is the caller's BuildFunc, so this
// package knows files and locks, not VMs.
//
// On disk, under Store.Dir:
//
//	<key>/meta.json  what the template was built from (Meta)
//	<key>/memory     guest RAM, mode 0400 once built; clones map it privately
//	<key>/state      QEMU's device state (migration stream)
//	<key>/empty/     the directory the template's 9p slot served
//	<key>.lock       flock: held while <key> is built, checked or removed
//	<key>.tmp-*/     a build in progress (a dead builder's is removed)
package template

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/state"
)

// Files in a template's directory.
const (
	MetaFile   = "meta.json"
	MemoryFile = "memory"
	StateFile  = "state"
	EmptyDir   = "empty"
)

// metaVersion changes when the layout of a template changes.
const metaVersion = 1

// ErrInUse reports a template that clones still use.
var ErrInUse = errors.New("template in use")

// ErrInvalid reports a template whose files are missing or damaged.
var ErrInvalid = errors.New("invalid template")

// ErrNotFound reports an unknown template key.
var ErrNotFound = errors.New("no such template")

// Shape is the VM size a template has; sandboxes round up to one.
type Shape struct {
	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memory_mib"`
}

func (s Shape) String() string { return fmt.Sprintf("%dcpu-%dM", s.VCPUs, s.MemoryMiB) }

// Classes are the shapes templates are made in.
type Classes struct {
	VCPUs     []int
	MemoryMiB []int
}

// Round returns the smallest class that holds vcpus and memMiB, or false
// when the request is larger than every class.
func (c Classes) Round(vcpus, memMiB int) (Shape, bool) {
	pick := func(classes []int, want int) (int, bool) {
		s := append([]int(nil), classes...)
		sort.Ints(s)
		for _, v := range s {
			if v >= want {
				return v, true
			}
		}
		return 0, false
	}
	v, ok1 := pick(c.VCPUs, vcpus)
	m, ok2 := pick(c.MemoryMiB, memMiB)
	return Shape{VCPUs: v, MemoryMiB: m}, ok1 && ok2
}

// Inputs are everything besides the shape that shapes the guest: a change
// of any of them makes a new template.
type Inputs struct {
	// Files whose identity (device, inode, size, modification time) counts:
	// kernel, initrd (which holds the agent), QEMU binary.
	Files []string `json:"files"`
	// Facts are other inputs as text: accelerator, kernel command line,
	// device layout, host facts such as the TSC frequency.
	Facts []string `json:"facts"`
}

// identity is what Key hashes for one file.
func identity(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("template input %s: %w", path, err)
	}
	return fmt.Sprintf("%s dev=%d ino=%d size=%d mtime=%d.%09d", path, st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec), nil
}

// Key names the template for shape and inputs: a hash of the shape, the
// facts and each file's identity.
func Key(shape Shape, in Inputs) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "v%d %s\n", metaVersion, shape)
	for _, f := range in.Files {
		id, err := identity(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintln(h, id)
	}
	for _, f := range in.Facts {
		fmt.Fprintln(h, strconv.Quote(f))
	}
	return shape.String() + "-" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Meta describes a built template.
type Meta struct {
	Version int       `json:"version"`
	Key     string    `json:"key"`
	Shape   Shape     `json:"shape"`
	Inputs  Inputs    `json:"inputs"`
	Built   time.Time `json:"built"`
	// BuildMs is how long the build took.
	BuildMs int64 `json:"build_ms"`
}

// Template is a built template.
type Template struct {
	Dir  string
	Meta Meta
}

// Memory is the template's RAM file.
func (t *Template) Memory() string { return filepath.Join(t.Dir, MemoryFile) }

// State is the template's device state file.
func (t *Template) State() string { return filepath.Join(t.Dir, StateFile) }

// BuildFunc boots a template VM in dir (which exists and is empty but for
// EmptyDir) and saves it there: MemoryFile and StateFile.
type BuildFunc func(ctx context.Context, dir string) error

// Store keeps templates in Dir.
type Store struct {
	Dir string
	Log *slog.Logger
	// KillStrays, if set, ends what still runs of a build whose builder
	// died (a template VM that outlived it) before its directory goes.
	KillStrays func(dir string)
	// Drain, if set, ends the pooled clones of a template (bounded by ctx)
	// before it is removed: they are no sandbox's yet.
	Drain func(ctx context.Context, key string)
}

// Get returns the template for shape and inputs, building it first when
// there is none or the one there is damaged. Concurrent callers (in any
// process) build it once: the others wait on its lock until ctx ends.
func (s *Store) Get(ctx context.Context, shape Shape, in Inputs, build BuildFunc) (*Template, error) {
	key, err := Key(shape, in)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	// A built template is read without the lock: it is complete once its
	// directory has its name (see build), and clones keep it from removal.
	if t, err := s.load(key); err == nil {
		return t, nil
	}
	unlock, err := s.lock(ctx, key, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	t, err := s.load(key)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, ErrNotFound) {
		s.Log.Warn("rebuilding a damaged template", "template", key, "err", err)
		s.removeDir(key)
	}
	t, err = s.build(ctx, key, shape, in, build)
	if err != nil {
		// No template, no lock file: as Remove, while holding it.
		os.Remove(filepath.Join(s.Dir, key+".lock"))
		return nil, err
	}
	s.pruneStale(key)
	return t, nil
}

// build makes the template in a temporary directory and renames it into
// place, so that no reader ever sees half a template.
func (s *Store) build(ctx context.Context, key string, shape Shape, in Inputs, build BuildFunc) (*Template, error) {
	old, _ := filepath.Glob(filepath.Join(s.Dir, key+".tmp-*"))
	for _, d := range old { // a builder that died (we hold the lock)
		if s.KillStrays != nil {
			s.KillStrays(d)
		}
		os.RemoveAll(d)
	}
	tmp, err := os.MkdirTemp(s.Dir, key+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", key, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	// Readable by all: a template VM's QEMU may run as a user of its own.
	if err := os.Mkdir(filepath.Join(tmp, EmptyDir), 0o555); err != nil {
		return nil, fmt.Errorf("template %s: %w", key, err)
	}
	start := time.Now()
	if err := build(ctx, tmp); err != nil {
		return nil, fmt.Errorf("template %s: build: %w", key, err)
	}
	meta := Meta{Version: metaVersion, Key: key, Shape: shape, Inputs: in, Built: time.Now().UTC(),
		BuildMs: time.Since(start).Milliseconds()}
	if err := checkFiles(tmp, meta); err != nil {
		return nil, fmt.Errorf("template %s: build: %w", key, err)
	}
	// Clones map the memory privately and must never change it; the
	// template VM's user (if it had one of its own) owns it no more.
	if err := os.Chown(filepath.Join(tmp, MemoryFile), 0, 0); err != nil {
		return nil, fmt.Errorf("template %s: %w", key, err)
	}
	if err := os.Chmod(filepath.Join(tmp, MemoryFile), 0o400); err != nil {
		return nil, fmt.Errorf("template %s: %w", key, err)
	}
	if err := state.Write(filepath.Join(tmp, MetaFile), meta); err != nil {
		return nil, fmt.Errorf("template %s: %w", key, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir, key)); err != nil {
		return nil, fmt.Errorf("template %s: %w", key, err)
	}
	ok = true
	s.Log.Info("template built", "template", key, "ms", meta.BuildMs)
	return &Template{Dir: filepath.Join(s.Dir, key), Meta: meta}, nil
}

// qemuStateMagic starts a QEMU migration stream ("QEVM").
var qemuStateMagic = []byte("QEVM")

// checkFiles validates a template's RAM and device state.
func checkFiles(dir string, m Meta) error {
	st, err := os.Stat(filepath.Join(dir, MemoryFile))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if want := int64(m.Shape.MemoryMiB) << 20; st.Size() != want {
		return fmt.Errorf("%w: memory file is %d bytes, want %d", ErrInvalid, st.Size(), want)
	}
	f, err := os.Open(filepath.Join(dir, StateFile))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	defer f.Close()
	head := make([]byte, len(qemuStateMagic))
	if _, err := f.ReadAt(head, 0); err != nil || string(head) != string(qemuStateMagic) {
		return fmt.Errorf("%w: device state is not a QEMU migration stream", ErrInvalid)
	}
	return nil
}

// load reads and checks the template named key.
func (s *Store) load(key string) (*Template, error) {
	dir := filepath.Join(s.Dir, key)
	var m Meta
	err := state.Read(filepath.Join(dir, MetaFile), &m)
	if errors.Is(err, os.ErrNotExist) {
		if _, derr := os.Stat(dir); derr == nil {
			return nil, fmt.Errorf("%w: %s has no %s", ErrInvalid, dir, MetaFile)
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil || m.Key != key || m.Version != metaVersion {
		return nil, fmt.Errorf("%w: %s: bad %s", ErrInvalid, key, MetaFile)
	}
	if err := checkFiles(dir, m); err != nil {
		return nil, err
	}
	return &Template{Dir: dir, Meta: m}, nil
}

// Invalidate removes a template that failed to serve a clone, so that the
// next sandbox builds it again. Clones running from it keep their mapping.
func (s *Store) Invalidate(t *Template, why error) {
	unlock, err := s.lock(context.Background(), t.Meta.Key, true)
	if err != nil {
		return
	}
	defer unlock()
	s.Log.Warn("template removed: it failed a clone", "template", t.Meta.Key, "err", why)
	s.removeDir(t.Meta.Key)
}

// removeDir removes a template's directory: renamed away first, so that
// no reader finds it half removed.
func (s *Store) removeDir(key string) {
	dir := filepath.Join(s.Dir, key)
	gone, err := os.MkdirTemp(s.Dir, key+".tmp-")
	if err == nil {
		if os.Rename(dir, filepath.Join(gone, "old")) == nil {
			dir = gone
		} else {
			os.Remove(gone)
		}
	}
	os.RemoveAll(dir)
}

// lock takes key's build lock; wait says whether to wait for it (until ctx
// ends). The lock dies with its process, so a killed builder holds none.
func (s *Store) lock(ctx context.Context, key string, wait bool) (func(), error) {
	unlock, err := filelock.Lock(ctx, filepath.Join(s.Dir, key+".lock"), wait)
	if err == nil {
		return unlock, nil
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil, fmt.Errorf("template %s: waiting for its build: %w", key, err)
	}
	return nil, fmt.Errorf("template %s: lock: %w", key, err)
}

// Info describes a template for `lodge template ls`.
type Info struct {
	Meta
	// DiskBytes is what the files take (RAM pages the guest touched).
	DiskBytes int64
	// Clones counts the processes that have its memory open.
	Clones int
	// Stale: an input changed since it was built.
	Stale bool
}

// List describes every template in the store.
func (s *Store) List() ([]Info, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, e := range ents {
		if !e.IsDir() || strings.Contains(e.Name(), ".tmp-") {
			continue
		}
		t, err := s.load(e.Name())
		if err != nil {
			continue
		}
		out = append(out, s.info(t))
	}
	return out, nil
}

func (s *Store) info(t *Template) Info {
	in := Info{Meta: t.Meta, Clones: Clones(t.Memory())}
	filepath.WalkDir(t.Dir, func(p string, d os.DirEntry, err error) error {
		var st unix.Stat_t
		if err == nil && unix.Lstat(p, &st) == nil {
			in.DiskBytes += st.Blocks * 512
		}
		return nil
	})
	if k, err := Key(t.Meta.Shape, t.Meta.Inputs); err != nil || k != t.Meta.Key {
		in.Stale = true
	}
	return in
}

// Remove deletes a template; one in use by clones is refused with their
// count.
func (s *Store) Remove(ctx context.Context, key string) error {
	if strings.ContainsAny(key, "/") || key == "" || key == "." || key == ".." {
		return fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	dir := filepath.Join(s.Dir, key)
	if _, err := os.Stat(dir); err != nil {
		// Before the lock: a name that is no template leaves no lock file.
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	unlock, err := s.lock(ctx, key, false)
	if err != nil {
		return fmt.Errorf("template %s is being built or checked: %w", key, err)
	}
	defer unlock()
	if _, err := os.Stat(dir); err != nil { // removed meanwhile
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if s.Drain != nil { // pooled clones are no one's yet
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s.Drain(dctx, key)
		cancel()
	}
	if n := Clones(filepath.Join(dir, MemoryFile)); n > 0 {
		return fmt.Errorf("%w: %d clone(s) of %s are running", ErrInUse, n, key)
	}
	s.removeDir(key)
	os.Remove(filepath.Join(s.Dir, key+".lock"))
	return nil
}

// pruneStale removes templates whose inputs changed (a new kernel, initrd
// or QEMU) and that no clone uses; keep is the one just built.
func (s *Store) pruneStale(keep string) {
	infos, _ := s.List()
	for _, in := range infos {
		if in.Key == keep || !in.Stale || (in.Clones > 0 && s.Drain == nil) {
			continue
		}
		if err := s.Remove(context.Background(), in.Key); err == nil {
			s.Log.Info("stale template removed", "template", in.Key)
		}
	}
	// Lock files of templates that are gone (a builder that died), unless
	// someone holds them.
	locks, _ := filepath.Glob(filepath.Join(s.Dir, "*.lock"))
	for _, l := range locks {
		key := strings.TrimSuffix(filepath.Base(l), ".lock")
		if _, err := os.Stat(filepath.Join(s.Dir, key)); err == nil {
			continue
		}
		if unlock, err := s.lock(context.Background(), key, false); err == nil {
			os.Remove(l)
			unlock()
		}
	}
}

// Clones counts the processes that hold memFile open (a clone's QEMU keeps
// its RAM file open while it runs).
func Clones(memFile string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	n := 0
	for _, p := range procs {
		fds, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(p, fd.Name())); err == nil && l == memFile {
				n++
				break
			}
		}
	}
	return n
}
