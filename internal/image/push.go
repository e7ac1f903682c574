package image

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push uploads im to its registry under ref, a tag: the blobs the
// registry lacks (each checked first, so a push again sends nothing),
// then the manifest as stored, so the image keeps its digest. kc gives
// the credentials (nil: docker's and podman's auth files).
func (s *Store) Push(ctx context.Context, im *Image, ref name.Reference, kc authn.Keychain) error {
	if _, ok := ref.(name.Tag); !ok {
		return fmt.Errorf("push %s: name a tag to push to, not a digest", ref)
	}
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	img, err := s.V1(im)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)); err != nil {
		return registryError("push", ref, ref.Context().Registry, err)
	}
	return nil
}
