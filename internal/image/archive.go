package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/layers"
)

// storedImage is an image of the store as go-containerregistry sees one.
type storedImage struct {
	s  *Store
	im *Image
}

func (si storedImage) RawConfigFile() ([]byte, error) { return si.s.BlobBytes(si.im.ConfigDigest) }
func (si storedImage) RawManifest() ([]byte, error)   { return si.s.BlobBytes(si.im.Ref.Manifest) }
func (si storedImage) MediaType() (types.MediaType, error) {
	if si.im.Manifest.MediaType != "" {
		return si.im.Manifest.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (si storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range si.im.Manifest.Layers {
		if l.Digest == h {
			return storedLayer{si.s, l}, nil
		}
	}
	if h == si.im.ConfigDigest {
		return storedLayer{si.s, si.im.Manifest.Config}, nil
	}
	return nil, fmt.Errorf("image %s has no blob %s", si.im.Name, h)
}

type storedLayer struct {
	s *Store
	d v1.Descriptor
}

func (l storedLayer) Digest() (v1.Hash, error)            { return l.d.Digest, nil }
func (l storedLayer) Size() (int64, error)                { return l.d.Size, nil }
func (l storedLayer) MediaType() (types.MediaType, error) { return l.d.MediaType, nil }
func (l storedLayer) Compressed() (io.ReadCloser, error)  { return l.s.Blob(l.d.Digest) }

// V1 gives a stored image to go-containerregistry.
func (s *Store) V1(im *Image) (v1.Image, error) {
	return partial.CompressedToImage(storedImage{s, im})
}

// Save writes the named images to w as docker save does (a tar that
// `docker load` and `lodge load` read).
func (s *Store) Save(ctx context.Context, names []string, w io.Writer) error {
	refs := map[name.Reference]v1.Image{}
	for _, n := range names {
		im, err := s.Find(n)
		if err != nil {
			return err
		}
		img, err := s.V1(im)
		if err != nil {
			return err
		}
		ref, err := name.ParseReference(im.Name)
		if err != nil {
			return err
		}
		refs[ref] = img
	}
	return tarball.MultiRefWrite(refs, w)
}

// Load reads images from a tar in docker save's format or an OCI image
// layout, stores and names them. A bad archive leaves nothing named.
func (s *Store) Load(ctx context.Context, r io.Reader) ([]*Image, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(s.Dir, "load.tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, "archive.tar")
	f, err := os.Create(archive)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("load: read the archive: %w", err)
	}
	names, err := tarNames(archive)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	var out []*Image
	switch {
	case names["manifest.json"]:
		opener := func() (io.ReadCloser, error) { return os.Open(archive) }
		m, err := tarball.LoadManifest(opener)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		for _, d := range m {
			if len(d.RepoTags) == 0 {
				return out, errors.New("load: an image in the archive has no name (RepoTags)")
			}
			for _, t := range d.RepoTags {
				tag, err := name.NewTag(t)
				if err != nil {
					return out, fmt.Errorf("load: %q: %w", t, err)
				}
				img, err := tarball.Image(opener, &tag)
				if err != nil {
					return out, fmt.Errorf("load %s: %w", t, err)
				}
				im, err := s.put(ctx, img, tag.Name(), nil)
				if err != nil {
					return out, fmt.Errorf("load %s: %w", t, err)
				}
				out = append(out, im)
			}
		}
	case names["index.json"] && names["oci-layout"]:
		dir := filepath.Join(tmp, "layout")
		if err := untarPlain(archive, dir); err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		ii, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		idx, err := ii.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		for _, d := range idx.Manifests {
			n := d.Annotations["io.containerd.image.name"]
			if n == "" {
				n = d.Annotations["org.opencontainers.image.ref.name"]
			}
			ref, err := name.ParseReference(n)
			if n == "" || err != nil {
				return out, fmt.Errorf("load: manifest %s in the layout has no usable name (annotation org.opencontainers.image.ref.name)", d.Digest)
			}
			img, err := ii.Image(d.Digest)
			if err != nil {
				return out, fmt.Errorf("load %s: %w", n, err)
			}
			im, err := s.put(ctx, img, ref.Name(), nil)
			if err != nil {
				return out, fmt.Errorf("load %s: %w", n, err)
			}
			out = append(out, im)
		}
	default:
		return nil, errors.New("load: neither a docker save archive (manifest.json) nor an OCI layout (oci-layout, index.json)")
	}
	return out, nil
}

func tarNames(archive string) (map[string]bool, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("not a tar archive: %w", err)
		}
		names[strings.TrimPrefix(filepath.Clean(h.Name), "./")] = true
	}
}

// untarPlain unpacks an OCI layout archive (regular files and directories
// only, no path leaving dir).
func untarPlain(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel := filepath.Clean(h.Name)
		if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("archive entry %q leaves the archive", h.Name)
		}
		p := filepath.Join(dir, rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %q: only files and directories belong in an OCI layout", h.Name)
		}
	}
}

// pruneGrace spares blobs written this recently: a pull in flight has
// written them and not yet named its image.
const pruneGrace = 10 * time.Minute

// Prune removes the blobs and layer images no named image uses.
func (s *Store) Prune(ctx context.Context) (blobs, layerImages int, freed int64, err error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return 0, 0, 0, err
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(s.Dir, "refs.lock"), true)
	if err != nil {
		return 0, 0, 0, err
	}
	defer unlock()
	refs, err := s.refs()
	if err != nil {
		return 0, 0, 0, err
	}
	keepBlob, keepLayer := map[string]bool{}, map[string]bool{}
	for _, r := range refs.Refs {
		keepBlob[r.Manifest.Hex] = true
		im, err := s.Open(r)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("prune: %w (nothing removed)", err)
		}
		keepBlob[im.ConfigDigest.Hex] = true
		for _, l := range im.Manifest.Layers {
			keepBlob[l.Digest.Hex] = true
		}
		for _, d := range im.Config.RootFS.DiffIDs {
			keepLayer[layers.DiffKey(d.String())] = true
		}
	}
	old := func(fi os.FileInfo) bool { return time.Since(fi.ModTime()) > pruneGrace }
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "blobs", "sha256"))
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || strings.Contains(e.Name(), ".") || keepBlob[e.Name()] || !old(fi) {
			continue
		}
		if os.Remove(filepath.Join(s.Dir, "blobs", "sha256", e.Name())) == nil {
			blobs++
			freed += fi.Size()
		}
	}
	infos, err := s.Layers.List()
	if err != nil {
		return blobs, 0, freed, err
	}
	for _, in := range infos {
		if !strings.HasPrefix(in.Key, "diff-") || keepLayer[in.Key] || time.Since(in.Made) < pruneGrace {
			continue
		}
		if n, err := s.Layers.RemoveImage(in.Key); err == nil {
			layerImages++
			freed += n
		}
	}
	return blobs, layerImages, freed, nil
}
