package image

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
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

// A registry that wants credentials: none and wrong ones are refused with
// words naming the fix; the ones in the usual auth file ($DOCKER_CONFIG)
// are used.
func TestPullCredentials(t *testing.T) {
	h := registry.New(registry.Logger(nilLogger()))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if u, p, ok := req.BasicAuth(); !ok || u != "lodge" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.ParseReference(host + "/private:v1")
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	good := authn.FromConfig(authn.AuthConfig{Username: "lodge", Password: "s3cret"})
	if err := remote.Write(ref, img, remote.WithAuth(good)); err != nil {
		t.Fatal(err)
	}

	s := newStore(t)
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)
	writeAuth := func(user, pass string) {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		b := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
		if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ name, user, pass string }{{"none", "", ""}, {"wrong", "lodge", "guess"}} {
		os.Remove(filepath.Join(cfgDir, "config.json"))
		if c.user != "" {
			writeAuth(c.user, c.pass)
		}
		_, err := s.Pull(context.Background(), ref, PullOptions{})
		if err == nil || !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), "private:v1") {
			t.Errorf("pull with %s credentials: %v", c.name, err)
		}
	}
	writeAuth("lodge", "s3cret")
	if _, err := s.Pull(context.Background(), ref, PullOptions{}); err != nil {
		t.Fatalf("pull with the credentials of config.json: %v", err)
	}
}

func TestPullUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ref, _ := name.ParseReference(addr + "/gone:v1")
	s := newStore(t)
	_, err = s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()})
	if err == nil || !strings.Contains(err.Error(), "cannot reach the registry "+addr) {
		t.Fatalf("pull from a closed port: %v", err)
	}
	if ents, _ := os.ReadDir(s.Dir); len(ents) != 0 {
		t.Errorf("store not empty after a failed pull: %v", ents)
	}
}

// A disk that fills during a pull (a real filesystem, a small tmpfs): the
// error names the image, the layer and the cause; nothing half-written is
// left; the same pull succeeds once there is room.
func TestPullDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	reg := newRegistry(t)
	img, err := random.Image(3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(strings.TrimPrefix(reg.URL, "http://") + "/big:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	s := &Store{Dir: filepath.Join(dir, "images"), Layers: &layers.Store{Dir: filepath.Join(dir, "layers")}}
	_, err = s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "big:v1") || !strings.Contains(err.Error(), "layer sha256:") {
		t.Fatalf("pull onto a full disk: %v", err)
	}
	// Complete blobs may stay (a later pull reuses them); nothing partial,
	// no layer image, no name.
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		switch base := filepath.Base(p); {
		case strings.Contains(base, ".tmp-"), strings.HasSuffix(base, ".erofs"), base == "refs.json":
			t.Errorf("left after a failed pull: %s", p)
		case strings.HasPrefix(filepath.Dir(p), filepath.Join(s.Dir, "blobs")) && !strings.HasSuffix(base, ".lock"):
			b, _ := os.ReadFile(p)
			if fmt.Sprintf("%x", sha256.Sum256(b)) != base {
				t.Errorf("a blob that does not match its digest: %s", p)
			}
		}
		return nil
	})
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), ref, PullOptions{Keychain: authn.NewMultiKeychain()}); err != nil {
		t.Fatalf("pull once there is room: %v", err)
	}
}
