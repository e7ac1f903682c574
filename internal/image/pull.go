package image

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/klauspost/compress/zstd"
)

// Progress hears about a pull, one layer at a time or several at once.
type Progress interface {
	// Layer announces a layer of size bytes; the returned writer is given
	// the bytes as they arrive and done is called once with the outcome
	// ("exists" when nothing was fetched).
	Layer(digest v1.Hash, size int64) (w io.Writer, done func(status string))
}

// PullOptions tunes a pull.
type PullOptions struct {
	Platform *v1.Platform   // nil: the host's (linux/amd64)
	Keychain authn.Keychain // nil: docker's and podman's auth files
	Progress Progress       // nil: silent
}

// ParseName normalises what a user typed (docker.io-style short names,
// tags, digests) into the name the store keeps.
func ParseName(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("invalid image name %q: %w", s, err)
	}
	return ref, nil
}

// StoreName is the name an image is kept under.
func StoreName(ref name.Reference) string { return ref.Name() }

// Pull fetches an image from its registry into the store and unpacks its
// layers (each blob and each layer once: what is present is neither
// fetched nor converted again) and names it.
func (s *Store) Pull(ctx context.Context, ref name.Reference, o PullOptions) (*Image, error) {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	plat := v1.Platform{OS: "linux", Architecture: "amd64"}
	if o.Platform != nil {
		plat = *o.Platform
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithPlatform(plat)}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, pullError(ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, pullError(ref, err)
	}
	im, err := s.put(ctx, img, StoreName(ref), o.Progress)
	if err != nil {
		return nil, pullError(ref, err)
	}
	return im, nil
}

// put stores img (layers, config, manifest: what is present is neither
// written nor unpacked again), unpacks its layers and names it.
func (s *Store) put(ctx context.Context, img v1.Image, name string, prog Progress) (*Image, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	for _, l := range m.Layers {
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, err
		}
		var w io.Writer = io.Discard
		done := func(string) {}
		if prog != nil {
			w, done = prog.Layer(l.Digest, l.Size)
		}
		fetched, err := s.PutBlob(ctx, l.Digest, func() (io.ReadCloser, error) {
			rc, err := layer.Compressed()
			if err != nil {
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{io.TeeReader(rc, w), rc}, nil
		})
		if err != nil {
			done("failed")
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		if fetched {
			done("downloaded")
		} else {
			done("exists")
		}
	}
	if _, err := s.PutBytes(ctx, rawConfig); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	md, err := s.PutBytes(ctx, rawManifest)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	im, err := s.Open(Ref{Name: name, Manifest: md})
	if err != nil {
		return nil, err
	}
	if _, err := s.RootLayers(ctx, im); err != nil {
		return nil, err
	}
	if err := s.Tag(ctx, name, md); err != nil {
		return nil, err
	}
	return s.Open(Ref{Name: name, Manifest: md})
}

// pullError says what went wrong in words a user can act on.
func pullError(ref name.Reference, err error) error {
	return registryError("pull", ref, ref.Context().Registry, err)
}

// registryError says what went wrong with op (pull, push, login) of what
// at reg in words a user can act on.
func registryError(op string, what fmt.Stringer, reg name.Registry, err error) error {
	var terr *transport.Error
	var nerr net.Error
	switch {
	case errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%s %s: the registry refused the credentials (lodge login %s, or docker's ~/.docker/config.json): %w",
			op, what, reg.RegistryStr(), err)
	case op == "pull" && (errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound ||
		errors.As(err, &terr) && hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode)):
		return fmt.Errorf("pull %s: no such image in %s: %w", what, reg.RegistryStr(), err)
	case errors.As(err, &nerr):
		return fmt.Errorf("%s %s: cannot reach the registry %s: %w", op, what, reg.RegistryStr(), err)
	}
	return fmt.Errorf("%s %s: %w", op, what, err)
}

func hasCode(e *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range e.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// decompress opens a layer blob as a tar stream: gzip, zstd or plain.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr, nil
	case len(magic) == 4 && string(magic) == "\x28\xb5\x2f\xfd":
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}
