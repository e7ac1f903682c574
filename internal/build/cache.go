package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/state"
)

// The build cache: a step whose inputs were built before gives the image
// it gave then, as docker's builder does. A step's key is the digest of
// the manifest it starts from, the instruction, the environment it is
// expanded with and, where they matter, its own inputs (RUN's argv, user,
// working directory and network; the content and metadata of what COPY
// and ADD write). The value is the manifest of the image the step made,
// kept in the store; an entry whose manifest, config or layers are gone
// (lodge image prune) is a miss.
//
//	<store>/build-cache.json   key -> manifest digest
//	<store>/build-cache.lock   flock held while it changes
type cacheFile struct {
	Version int               `json:"version"`
	Steps   map[string]string `json:"steps"`
}

// key is a step's cache key.
func (bd *build) key(st *stage, parts ...string) (string, error) {
	d, err := st.img.Digest()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	io.WriteString(h, d.String())
	for _, p := range append(parts, st.env()...) {
		fmt.Fprintf(h, "\x00%d:%s", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cached gives the stage the image a step with key made before, if the
// store still has it; it reports whether it did.
func (bd *build) cached(st *stage, key string) bool {
	if bd.o.NoCache {
		return false
	}
	var cf cacheFile
	if state.Read(bd.cachePath(), &cf) != nil {
		return false
	}
	d, err := v1.NewHash(cf.Steps[key])
	if err != nil {
		return false
	}
	im, err := bd.b.Store.Open(image.Ref{Manifest: d})
	if err != nil {
		return false
	}
	for _, l := range im.Manifest.Layers {
		if !bd.b.Store.HasBlob(l.Digest) {
			return false
		}
	}
	img, err := bd.b.Store.V1(im)
	if err != nil {
		return false
	}
	// Not st.stored: the image may have no name left (an earlier build's
	// intermediate one), and a RUN's container needs one; store names
	// it for this build when a step needs it stored.
	st.img, st.stored = img, nil
	fmt.Fprintln(bd.o.Out, " ---> Using cache")
	return true
}

// remember stores the stage's image and records it as what the step with
// key made.
func (bd *build) remember(ctx context.Context, st *stage, key string) error {
	conf, err := st.img.ConfigFile()
	if err != nil {
		return err
	}
	conf = conf.DeepCopy()
	conf.Created = v1.Time{Time: time.Now().UTC().Truncate(time.Second)} // when the step made it
	if st.img, err = mutate.ConfigFile(st.img, conf); err != nil {
		return err
	}
	im, err := bd.store(ctx, st)
	if err != nil {
		return err
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(bd.b.Store.Dir, "build-cache.lock"), true)
	if err != nil {
		return err
	}
	defer unlock()
	cf := cacheFile{Version: 1, Steps: map[string]string{}}
	if err := state.Read(bd.cachePath(), &cf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the build cache %s: %w (remove it to start afresh)", bd.cachePath(), err)
	}
	if cf.Steps == nil {
		cf.Steps = map[string]string{}
	}
	cf.Steps[key] = im.Ref.Manifest.String()
	return state.Write(bd.cachePath(), cf)
}

func (bd *build) cachePath() string { return filepath.Join(bd.b.Store.Dir, "build-cache.json") }

// digest is a content key of the layer lb would write: each entry's path,
// metadata and content.
func (lb *layerBuilder) digest() (string, error) { return lb.digestOf(true) }

// digestOf is digest, with or without the entries' modification times
// (a RUN --mount=type=bind's key has none, as BuildKit's: a checkout
// that touches every file is no change).
func (lb *layerBuilder) digestOf(times bool) (string, error) {
	h := sha256.New()
	for _, p := range lb.sorted() {
		e := lb.entries[p]
		x := e.hdr
		if e.made || !times {
			x.ModTime = time.Time{}
		}
		fmt.Fprintf(h, "%s\x00%c\x00%o\x00%d:%d\x00%d\x00%s\x00%s\x00%v\n", p, x.Typeflag, x.Mode, x.Uid, x.Gid,
			x.ModTime.Unix(), x.Linkname, strings.Join(sortedRecords(x.PAXRecords), ","), x.Devmajor<<32|x.Devminor)
		if e.open != nil {
			rc, err := e.open()
			if err != nil {
				return "", fmt.Errorf("%s: %w", p, err)
			}
			_, err = io.Copy(h, rc)
			rc.Close()
			if err != nil {
				return "", fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func sortedRecords(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// ForgetSteps empties the build cache of the store at storeDir (lodge
// builder prune); it returns how many steps it forgot. The images they
// made stay in the store until nothing names them (lodge image prune).
func ForgetSteps(ctx context.Context, storeDir string) (int, error) {
	unlock, err := filelock.Lock(ctx, filepath.Join(storeDir, "build-cache.lock"), true)
	if err != nil {
		return 0, err
	}
	defer unlock()
	p := filepath.Join(storeDir, "build-cache.json")
	var cf cacheFile
	state.Read(p, &cf) // a damaged cache is removed as well
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return len(cf.Steps), nil
}
