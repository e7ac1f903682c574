package image

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Commit is an image made of one more layer on Base (lodge commit: a
// container's changes on its image; lodge import: a root on Scratch).
type Commit struct {
	Base v1.Image
	// Layer is the changes as a plain, uncompressed layer tar (a file:
	// it is read twice, for its digest and into the store).
	Layer string
	// Config is the new image's config (the container's, with --change's).
	Config                     v1.Config
	Author, Comment, CreatedBy string
	// Name is what to call it; "" leaves it untagged (UntaggedName).
	Name string
}

// UntaggedName is the name an untagged image is kept under: images list
// it as <none> <none>, and its ID finds it.
func UntaggedName(manifest v1.Hash) string { return "<none>@" + manifest.String() }

// Commit stores Base plus one layer with the new config and a history
// entry for the layer, and names it.
func (s *Store) Commit(ctx context.Context, c Commit) (*Image, error) {
	now := v1.Time{Time: time.Now().UTC().Truncate(time.Second)}
	img, err := AppendLayer(c.Base, c.Layer, v1.History{Created: now, CreatedBy: c.CreatedBy, Author: c.Author, Comment: c.Comment})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config, cf.Created, cf.Author = c.Config, now, c.Author
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	name := c.Name
	if name == "" {
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		name = UntaggedName(d)
	}
	im, err := s.Import(ctx, img, name)
	if err != nil {
		return nil, fmt.Errorf("store the image: %w", err)
	}
	return im, nil
}

// AppendLayer returns img with the uncompressed layer tar at file added
// (gzip-compressed, of the media type img's manifest uses) and its
// history entry.
func AppendLayer(img v1.Image, file string, h v1.History) (v1.Image, error) {
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	lt := types.OCILayer
	if mt == types.DockerManifestSchema2 {
		lt = types.DockerLayer
	}
	l, err := tarball.LayerFromFile(file, tarball.WithMediaType(lt), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{Layer: l, History: h})
}

// Scratch is an empty linux/amd64 OCI image (FROM scratch, lodge import).
func Scratch() (v1.Image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	return mutate.ConfigFile(img, cf)
}
