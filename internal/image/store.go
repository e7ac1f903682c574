// Package image keeps container images for the `lodge` command: a
// content-addressed blob store (manifests, configs, compressed layers), the
// names that point into it, and each layer's erofs image in the layer store
// (internal/layers), keyed by its diff ID so that a layer shared by images is
// unpacked once. Registries are spoken to with go-containerregistry.
//
// On disk, under Store.Dir:
//
//	blobs/sha256/<hex>       verified content, written once (temp file + rename)
//	blobs/sha256/<hex>.lock  flock while a blob is fetched (removed after)
//	refs.json                name -> manifest digest (Refs)
//	refs.lock                flock held while refs.json changes
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/state"
)

// Errors.
var (
	ErrNotFound = errors.New("no such image")
	ErrInUse    = errors.New("image in use")
	ErrCorrupt  = errors.New("content does not match its digest")
)

// Store is the image store.
type Store struct {
	Dir    string
	Layers *layers.Store
	Log    *slog.Logger
}

// Ref is one name of an image.
type Ref struct {
	Name     string    `json:"name"`     // normalised: registry/repo:tag or @digest
	Manifest v1.Hash   `json:"manifest"` // the image manifest's digest
	Added    time.Time `json:"added"`
}

// Refs is refs.json.
type Refs struct {
	Version int   `json:"version"`
	Refs    []Ref `json:"refs"`
}

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.Dir, "blobs", h.Algorithm, h.Hex)
}

// HasBlob says whether the store holds the blob.
func (s *Store) HasBlob(h v1.Hash) bool {
	fi, err := os.Stat(s.blobPath(h))
	return err == nil && fi.Mode().IsRegular()
}

// Blob opens a stored blob.
func (s *Store) Blob(h v1.Hash) (*os.File, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return nil, fmt.Errorf("unsupported digest %s", h)
	}
	return os.Open(s.blobPath(h))
}

// BlobBytes reads a small stored blob (a manifest or a config).
func (s *Store) BlobBytes(h v1.Hash) ([]byte, error) {
	f, err := s.Blob(h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 8<<20))
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != h.Hex {
		return nil, fmt.Errorf("blob %s: %w", h, ErrCorrupt)
	}
	return b, nil
}

// PutBlob stores the content open returns, once: concurrent callers (in
// this process or others) for one digest wait for the first, and none
// fetches what is already stored. The content is checked against h while
// it is written; a mismatch, a short read or a full disk leaves nothing.
// fetched says whether this call wrote it.
func (s *Store) PutBlob(ctx context.Context, h v1.Hash, open func() (io.ReadCloser, error)) (fetched bool, err error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return false, fmt.Errorf("unsupported digest %s", h)
	}
	if s.HasBlob(h) {
		return false, nil
	}
	dir := filepath.Dir(s.blobPath(h))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	lock := s.blobPath(h) + ".lock"
	unlock, err := filelock.Lock(ctx, lock, true)
	if err != nil {
		return false, err
	}
	defer unlock()
	if s.HasBlob(h) {
		return false, nil
	}
	tmp, err := os.CreateTemp(dir, h.Hex+".tmp-")
	if err != nil {
		return false, err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	rc, err := open()
	if err != nil {
		return false, err
	}
	defer rc.Close()
	d := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, d), ctxReader{ctx, rc}); err != nil {
		return false, err
	}
	if got := hex.EncodeToString(d.Sum(nil)); got != h.Hex {
		return false, fmt.Errorf("blob %s: got sha256:%s: %w", h, got, ErrCorrupt)
	}
	if err := tmp.Chmod(0o444); err != nil {
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), s.blobPath(h)); err != nil {
		return false, err
	}
	ok = true
	os.Remove(lock)
	return true, nil
}

// PutBytes stores a small blob and returns its digest.
func (s *Store) PutBytes(ctx context.Context, b []byte) (v1.Hash, error) {
	sum := sha256.Sum256(b)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	_, err := s.PutBlob(ctx, h, func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(string(b))), nil })
	return h, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// refs reads refs.json (empty if none).
func (s *Store) refs() (Refs, error) {
	var r Refs
	err := state.Read(filepath.Join(s.Dir, "refs.json"), &r)
	if errors.Is(err, os.ErrNotExist) {
		return Refs{Version: 1}, nil
	}
	return r, err
}

// updateRefs changes refs.json under the store's lock.
func (s *Store) updateRefs(ctx context.Context, f func(*Refs) error) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(s.Dir, "refs.lock"), true)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.refs()
	if err != nil {
		return err
	}
	if err := f(&r); err != nil {
		return err
	}
	r.Version = 1
	sort.Slice(r.Refs, func(i, j int) bool { return r.Refs[i].Name < r.Refs[j].Name })
	return state.Write(filepath.Join(s.Dir, "refs.json"), r)
}

// Tag points name at the manifest (replacing what it named before).
func (s *Store) Tag(ctx context.Context, name string, manifest v1.Hash) error {
	return s.updateRefs(ctx, func(r *Refs) error {
		for i := range r.Refs {
			if r.Refs[i].Name == name {
				r.Refs[i].Manifest, r.Refs[i].Added = manifest, time.Now().UTC()
				return nil
			}
		}
		r.Refs = append(r.Refs, Ref{Name: name, Manifest: manifest, Added: time.Now().UTC()})
		return nil
	})
}

// Untag removes a name; it reports whether it existed.
func (s *Store) Untag(ctx context.Context, name string) (bool, error) {
	found := false
	err := s.updateRefs(ctx, func(r *Refs) error {
		out := r.Refs[:0]
		for _, ref := range r.Refs {
			if ref.Name == name {
				found = true
				continue
			}
			out = append(out, ref)
		}
		r.Refs = out
		return nil
	})
	return found, err
}

// List returns every name in the store.
func (s *Store) List() ([]Ref, error) {
	r, err := s.refs()
	return r.Refs, err
}

// Image is an image in the store.
type Image struct {
	Ref
	Manifest v1.Manifest
	Config   v1.ConfigFile
	// ConfigDigest is the image ID (docker's IMAGE ID).
	ConfigDigest v1.Hash
}

// Size is the compressed size of the image's layers.
func (im *Image) Size() int64 {
	var n int64
	for _, l := range im.Manifest.Layers {
		n += l.Size
	}
	return n
}

// Open reads an image's manifest and config from the store.
func (s *Store) Open(ref Ref) (*Image, error) {
	mb, err := s.BlobBytes(ref.Manifest)
	if err != nil {
		return nil, fmt.Errorf("image %s: manifest: %w", ref.Name, err)
	}
	im := &Image{Ref: ref}
	if err := json.Unmarshal(mb, &im.Manifest); err != nil {
		return nil, fmt.Errorf("image %s: manifest: %w", ref.Name, err)
	}
	cb, err := s.BlobBytes(im.Manifest.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", ref.Name, err)
	}
	if err := json.Unmarshal(cb, &im.Config); err != nil {
		return nil, fmt.Errorf("image %s: config: %w", ref.Name, err)
	}
	im.ConfigDigest = im.Manifest.Config.Digest
	if len(im.Config.RootFS.DiffIDs) != len(im.Manifest.Layers) {
		return nil, fmt.Errorf("image %s: %d layers but %d diff IDs", ref.Name, len(im.Manifest.Layers), len(im.Config.RootFS.DiffIDs))
	}
	return im, nil
}

// Find resolves what a user typed: a name (normalised by the caller), an
// image ID or a unique prefix of one.
func (s *Store) Find(name string) (*Image, error) {
	refs, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, r := range refs {
		if r.Name == name {
			return s.Open(r)
		}
	}
	id := strings.TrimPrefix(name, "sha256:")
	if len(id) >= 4 && isHex(id) {
		var match *Image
		for _, r := range refs {
			im, err := s.Open(r)
			if err != nil {
				continue
			}
			if strings.HasPrefix(im.ConfigDigest.Hex, id) {
				if match != nil && match.ConfigDigest != im.ConfigDigest {
					return nil, fmt.Errorf("%q names more than one image", name)
				}
				match = im
			}
		}
		if match != nil {
			return match, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
}

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// RootLayers returns the erofs images of an image's layers, topmost first
// (overlayfs' order), converting any that are missing from the stored
// blobs.
func (s *Store) RootLayers(ctx context.Context, im *Image) ([]string, error) {
	out := make([]string, len(im.Manifest.Layers))
	for i, l := range im.Manifest.Layers {
		p, err := s.unpack(ctx, l, im.Config.RootFS.DiffIDs[i])
		if err != nil {
			return nil, fmt.Errorf("image %s: layer %s: %w", im.Name, l.Digest, err)
		}
		out[len(out)-1-i] = p
	}
	return out, nil
}

// unpack makes (once) the erofs image of a stored layer blob, checking
// that its uncompressed content is diffID.
func (s *Store) unpack(ctx context.Context, l v1.Descriptor, diffID v1.Hash) (string, error) {
	if p := s.Layers.Path(layers.DiffKey(diffID.String())); fileExists(p) {
		return p, nil
	}
	f, err := s.Blob(l.Digest)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr, err := decompress(f)
	if err != nil {
		return "", err
	}
	defer tr.Close()
	h := sha256.New()
	p, _, err := s.Layers.FromTar(ctx, diffID.String(), io.TeeReader(tr, h), func() error { return checkSum(h, diffID) })
	return p, err
}

func checkSum(h hash.Hash, want v1.Hash) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("uncompressed layer is sha256:%s, the image says %s: %w", got, want, ErrCorrupt)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
