// Package layers keeps the read-only erofs images of image layers that
// container root filesystems are built from in the guest: each layer is
// converted once, when the first container that uses it starts, and the
// image is shared by every sandbox that uses that layer (see
// docs/architecture.md, "Root filesystems from layer images"). It also
// makes the sparse ext4 image that holds a container's writable layer.
//
// On disk, under Store.Dir:
//
//	<key>.erofs   a layer's image, mode 0444
//	<key>.json    where it came from (Meta), for Prune and for people
//	<key>.lock    flock: held while <key> is converted (removed after)
//	<key>.tmp-*   a conversion in progress (a dead converter's is removed)
//	blank-<hash>-<size>.ext4   the blank writable layer of a size (writable.go),
//	              with its .lock and .tmp-* as above
package layers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/state"
)

// Store holds layer images.
type Store struct {
	Dir string
	Log *slog.Logger
}

// Meta records what a layer image was made from.
type Meta struct {
	Key    string    `json:"key"`
	Source string    `json:"source"` // the directory converted
	Made   time.Time `json:"made"`
	MadeMs int64     `json:"made_ms"`
	Bytes  int64     `json:"bytes"`
}

// DirKey names the image of a read-only directory: its path and the
// identity of the directory itself (device, inode, change time). A layer
// unpacked by containerd is never changed after it is committed, so the
// same directory always gives the same key, and a directory made anew at
// the same path gives a new one.
func DirKey(dir string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	h := sha256.New()
	fmt.Fprintf(h, "dir\x00%s\x00%d\x00%d\x00%d.%d", dir, st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
	return "dir-" + hex.EncodeToString(h.Sum(nil))[:32], nil
}

// Path is where the image of key lives.
func (s *Store) Path(key string) string { return filepath.Join(s.Dir, key+".erofs") }

// FromDir returns the image of dir (a layer in overlayfs form: whiteouts
// are 0/0 character devices, opaque directories carry
// trusted.overlay.opaque), converting it unless it is already in the
// store. Concurrent calls, in this process or others, convert it once.
// made says whether this call converted it.
func (s *Store) FromDir(ctx context.Context, dir string) (path string, made bool, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", false, err
	}
	key, err := DirKey(dir)
	if err != nil {
		return "", false, fmt.Errorf("layer %s: %w", dir, err)
	}
	return s.get(ctx, key, dir, func(out *os.File) error { return writeDir(out, dir) })
}

func (s *Store) get(ctx context.Context, key, source string, convert func(*os.File) error) (string, bool, error) {
	path := s.Path(key)
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	start := time.Now()
	metaPath := filepath.Join(s.Dir, key+".json")
	var size int64
	wroteMeta := false
	made, err := s.makeOnce(ctx, key, path, func() error { _, err := os.Stat(path); return err },
		func(f *os.File) error {
			if err := convert(f); err != nil {
				return fmt.Errorf("convert to erofs: %w", err)
			}
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			size = fi.Size()
			// The record goes first: an image is listed (and pruned) only
			// with one, and a record without its image is skipped.
			meta := Meta{Key: key, Source: source, Made: time.Now().UTC(), MadeMs: time.Since(start).Milliseconds(), Bytes: size}
			wroteMeta = true
			return state.Write(metaPath, meta)
		})
	if err != nil {
		if wroteMeta {
			os.Remove(metaPath)
		}
		return "", false, fmt.Errorf("layer %s: %w", source, err)
	}
	if made && s.Log != nil {
		s.Log.Debug("layer converted", "source", source, "image", path, "bytes", size, "took", time.Since(start).Round(time.Millisecond))
	}
	return path, made, nil
}

// makeOnce makes the store's file final once, whoever asks at the same
// time, in this process or others: under the lock <name>.lock, unless
// have (run under it) finds final there, fill writes a new <name>.tmp-*,
// which is made read-only, synced and renamed to final. A file have finds
// damaged (an error other than not-existing) is replaced. What a dead
// maker left (its temporary file) is removed first. It reports whether
// this call made the file; on error no temporary file is left.
func (s *Store) makeOnce(ctx context.Context, name, final string, have func() error, fill func(*os.File) error) (bool, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return false, fmt.Errorf("layer store: %w", err)
	}
	lockPath := filepath.Join(s.Dir, name+".lock")
	unlock, err := filelock.Lock(ctx, lockPath, true)
	if err != nil {
		return false, fmt.Errorf("waiting for %s to be made: %w", filepath.Base(final), err)
	}
	defer unlock()
	// Whoever held the lock before may have made it (and removed the lock
	// file, which our lock then made anew: it goes too).
	if err := have(); err == nil {
		os.Remove(lockPath)
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) && s.Log != nil {
		s.Log.Warn("store file is damaged: making it again", "file", final, "err", err)
	}
	s.removeTemps(name)
	f, err := os.CreateTemp(s.Dir, name+".tmp-")
	if err != nil {
		return false, err
	}
	err = fill(f)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), final)
	}
	if err != nil {
		os.Remove(f.Name())
		return false, err
	}
	// Everyone who takes the lock from now on finds the file first, so
	// the lock file can go.
	os.Remove(lockPath)
	return true, nil
}

// removeTemps removes what a maker of name that died left (the caller
// holds name's lock, so no live maker is writing them).
func (s *Store) removeTemps(name string) {
	olds, _ := filepath.Glob(filepath.Join(s.Dir, name+".tmp-*"))
	for _, o := range olds {
		os.Remove(o)
	}
}

// Info describes one image for people and for Prune.
type Info struct {
	Meta
	Path string
	// Orphan: the source directory is gone, so no new container can ask
	// for this image.
	Orphan bool
}

// List describes every image in the store.
func (s *Store) List() ([]Info, error) {
	metas, err := filepath.Glob(filepath.Join(s.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, m := range metas {
		key := strings.TrimSuffix(filepath.Base(m), ".json")
		var meta Meta
		if err := state.Read(m, &meta); err != nil || meta.Key != key {
			continue
		}
		if _, err := os.Stat(s.Path(key)); err != nil {
			continue
		}
		in := Info{Meta: meta, Path: s.Path(key)}
		if strings.HasPrefix(key, "dir-") {
			if k, err := DirKey(meta.Source); err != nil || k != key {
				in.Orphan = true
			}
		}
		out = append(out, in)
	}
	return out, nil
}

// Prune removes the images whose source is gone. A guest that still reads
// one keeps reading it: the host's open file outlives its name.
func (s *Store) Prune() (removed int, err error) {
	infos, err := s.List()
	if err != nil {
		return 0, err
	}
	for _, in := range infos {
		if !in.Orphan {
			continue
		}
		if _, err := s.RemoveImage(in.Key); err == nil {
			removed++
		}
	}
	return removed, nil
}

// RemoveImage removes key's image and returns the bytes it took; a guest
// that reads it keeps reading it (the host's open file outlives its
// name). It fails while the image is being made.
func (s *Store) RemoveImage(key string) (int64, error) {
	unlock, err := filelock.Lock(context.Background(), filepath.Join(s.Dir, key+".lock"), false)
	if err != nil {
		return 0, err
	}
	defer unlock()
	var size int64
	if fi, err := os.Stat(s.Path(key)); err == nil {
		size = fi.Size()
	}
	rerr := os.Remove(s.Path(key))
	os.Remove(filepath.Join(s.Dir, key+".json"))
	os.Remove(filepath.Join(s.Dir, key+".lock"))
	return size, rerr
}

// BundleFile is a file in an OCI bundle, written by `lodge` (whoever
// writes the bundle), that gives the container's root as layer images in
// the store instead of the bundle's root directory.
const BundleFile = "lodge-layers.json"

// BundleLayers is BundleFile's content.
type BundleLayers struct {
	// Images are erofs images in the layer store, topmost first.
	Images []string `json:"images"`
	// KeepWritable: the container's writable layer (lodge-rw.img in the
	// bundle) outlives it, and the next container made from this bundle
	// writes on in it (`lodge start` of a stopped container).
	KeepWritable bool `json:"keep_writable,omitempty"`
	// WritableBytes is the writable layer's size (0: the store's
	// default, [layers] writable_gib): lodge run --storage-opt size=.
	WritableBytes int64 `json:"writable_bytes,omitempty"`
}

// ReadBundle reads bundle's BundleFile (nil, nil if it has none) and
// checks that every image it names is an image file of this store: a
// bundle cannot point the guest at any other host file.
func (s *Store) ReadBundle(bundle string) (*BundleLayers, error) {
	var bl BundleLayers
	err := state.Read(filepath.Join(bundle, BundleFile), &bl)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BundleFile, err)
	}
	if len(bl.Images) == 0 {
		return nil, fmt.Errorf("%s names no images", BundleFile)
	}
	for _, p := range bl.Images {
		if filepath.Clean(p) != p || filepath.Dir(p) != filepath.Clean(s.Dir) || !strings.HasSuffix(p, ".erofs") {
			return nil, fmt.Errorf("%s: %q is not an image of the layer store %s", BundleFile, p, s.Dir)
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: image %s: not a regular file in the layer store (pulled image removed? pull it again)", BundleFile, p)
		}
	}
	return &bl, nil
}
