package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/lodgeruntime/lodge/internal/layers"
)

// testRegistry serves go-containerregistry's in-memory registry on
// 127.0.0.1, counting blob downloads; corrupt, when set, garbles them.
type testRegistry struct {
	*httptest.Server
	blobGets atomic.Int64
	corrupt  atomic.Bool
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	h := registry.New(registry.Logger(nilLogger()))
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			r.blobGets.Add(1)
			if r.corrupt.Load() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				b := rec.Body.Bytes()
				if len(b) > 0 {
					b[len(b)/2] ^= 0xff
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				w.Write(b)
				return
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *testRegistry) push(t *testing.T, repo string, layers int) (name.Reference, v1.Image) {
	t.Helper()
	img, err := random.Image(4096, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(r.URL, "http://") + "/" + repo + ":v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref, img
}

func newStore(t *testing.T) *Store {
	dir := t.TempDir()
	return &Store{Dir: filepath.Join(dir, "images"), Layers: &layers.Store{Dir: filepath.Join(dir, "layers")}}
}

type countProgress struct {
	mu     sync.Mutex
	status map[string]int
	bytes  int64
}

func (p *countProgress) Layer(d v1.Hash, size int64) (io.Writer, func(string)) {
	return writerFunc(func(b []byte) (int, error) {
			p.mu.Lock()
			p.bytes += int64(len(b))
			p.mu.Unlock()
			return len(b), nil
		}), func(s string) {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.status == nil {
				p.status = map[string]int{}
			}
			p.status[s]++
		}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestPullStoresAndUnpacksOnce(t *testing.T) {
	reg := newRegistry(t)
	ref, img := reg.push(t, "app", 3)
	s := newStore(t)
	ctx := context.Background()
	p := &countProgress{}
	im, err := s.Pull(ctx, ref, PullOptions{Progress: p, Keychain: authn.NewMultiKeychain()})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	if im.ConfigDigest != want || len(im.Manifest.Layers) != 3 {
		t.Fatalf("pulled %s with %d layers, want %s with 3", im.ConfigDigest, len(im.Manifest.Layers), want)
	}
	if p.status["downloaded"] != 3 || p.bytes == 0 {
		t.Errorf("progress: %v, %d bytes; want 3 layers downloaded", p.status, p.bytes)
	}
	roots, err := s.RootLayers(ctx, im)
	if err != nil || len(roots) != 3 {
		t.Fatalf("RootLayers = %v, %v", roots, err)
	}
	infos, _ := s.Layers.List()
	if len(infos) != 3 {
		t.Fatalf("layer store holds %d images, want 3", len(infos))
	}

	// Again: nothing fetched, nothing converted.
	gets := reg.blobGets.Load()
	p2 := &countProgress{}
	if _, err := s.Pull(ctx, ref, PullOptions{Progress: p2, Keychain: authn.NewMultiKeychain()}); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets.Load() - gets; n != 1 { // the config only (go-containerregistry reads it to resolve the image)
		t.Errorf("second pull fetched %d blobs, want only the config", n)
	}
	if p2.status["exists"] != 3 {
		t.Errorf("second pull progress %v, want 3 layers that exist", p2.status)
	}
	if found, err := s.Find(StoreName(ref)); err != nil || found.ConfigDigest != want {
		t.Errorf("Find by name: %v", err)
	}
	if found, err := s.Find(want.Hex[:12]); err != nil || found.ConfigDigest != want {
		t.Errorf("Find by short ID: %v", err)
	}
}

func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	reg := newRegistry(t)
	ref, _ := reg.push(t, "app", 4)
	s := newStore(t)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// 4 layers once each, plus each pull's read of the config.
	if n := reg.blobGets.Load(); n != 4+3 {
		t.Errorf("%d blob downloads for 3 concurrent pulls of 4 layers, want 7", n)
	}
}

func TestCorruptLayerLeavesNothing(t *testing.T) {
	reg := newRegistry(t)
	ref, _ := reg.push(t, "app", 2)
	s := newStore(t)
	reg.corrupt.Store(true)
	_, err := s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()})
	if err == nil {
		t.Fatal("a corrupt layer was accepted")
	}
	if !strings.Contains(err.Error(), ref.String()) {
		t.Errorf("error does not name the image: %v", err)
	}
	blobs, _ := filepath.Glob(filepath.Join(s.Dir, "blobs", "sha256", "*"))
	for _, b := range blobs {
		if !strings.HasSuffix(b, ".lock") {
			t.Errorf("left in the store: %s", b)
		}
	}
	if refs, _ := s.List(); len(refs) != 0 {
		t.Errorf("names left: %v", refs)
	}
	reg.corrupt.Store(false)
	if _, err := s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()}); err != nil {
		t.Fatalf("pull after a corrupt one: %v", err)
	}
}

func TestPullUnknownImage(t *testing.T) {
	reg := newRegistry(t)
	s := newStore(t)
	ref, _ := name.ParseReference(strings.TrimPrefix(reg.URL, "http://") + "/nothing:here")
	_, err := s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()})
	if err == nil || !strings.Contains(err.Error(), "no such image") {
		t.Fatalf("pull of an unknown image: %v", err)
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 0 {
		t.Errorf("store not empty after a failed pull: %v", ents)
	}
}

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, syscall.ENOSPC
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// A write that fails halfway (a full disk, a dropped connection) leaves no
// blob and no temporary file, and a later write succeeds.
func TestPutBlobFailureLeavesNothing(t *testing.T) {
	s := newStore(t)
	content := strings.Repeat("layer", 1000)
	h := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte(content)))}
	_, err := s.PutBlob(context.Background(), h, func() (io.ReadCloser, error) {
		return io.NopCloser(&failingReader{n: 2000}), nil
	})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("PutBlob = %v, want the write's error", err)
	}
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "blobs", "sha256"))
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("left after a failed write: %s", e.Name())
		}
	}
	if fetched, err := s.PutBlob(context.Background(), h, func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(content)), nil
	}); err != nil || !fetched {
		t.Fatalf("retry: %v, %v", fetched, err)
	}
}
