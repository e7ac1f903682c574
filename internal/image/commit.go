package image

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Commit is an image made from a container's changes (lodge commit).
type Commit struct {
	Parent *Image
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

// Commit stores the parent image plus one layer, the changes, with the
// new config and a history entry for the layer, and names it.
func (s *Store) Commit(ctx context.Context, c Commit) (*Image, error) {
	base, err := s.V1(c.Parent)
	if err != nil {
		return nil, err
	}
	mt, err := base.MediaType()
	if err != nil {
		return nil, err
	}
	layerType := types.OCILayer
	if mt == types.DockerManifestSchema2 {
		layerType = types.DockerLayer
	}
	layer, err := tarball.LayerFromFile(c.Layer, tarball.WithMediaType(layerType), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	now := v1.Time{Time: time.Now().UTC().Truncate(time.Second)}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: now, CreatedBy: c.CreatedBy, Author: c.Author, Comment: c.Comment}})
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
		return nil, fmt.Errorf("store the committed image: %w", err)
	}
	return im, nil
}
