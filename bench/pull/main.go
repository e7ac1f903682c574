// Command pull measures `lodge pull` of a 3-layer image of about 100 MB
// from a registry on 127.0.0.1 (go-containerregistry's, in this process),
// into a fresh store each run: the whole pull in MB/s, then the conversion
// of the same layers into erofs images alone, beside the time to write the
// same (uncompressed) bytes to a file on the same disk. It prints medians.
//
//	go run ./bench/pull -runs 5 -dir /var/tmp
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/layers"
)

func main() {
	runs := flag.Int("runs", 5, "runs of each measurement")
	dir := flag.String("dir", "/var/tmp", "where the stores are made (a disk, not a tmpfs)")
	mb := flag.Int("mb", 100, "image size in MB (3 layers)")
	flag.Parse()
	if err := run(*runs, *dir, *mb); err != nil {
		fmt.Fprintln(os.Stderr, "pull bench:", err)
		os.Exit(1)
	}
}

// layerTar is a layer of about size bytes: directories of files from 1 KiB
// to 256 KiB of random (incompressible) bytes, as a real layer has many
// files rather than one.
func layerTar(size int64, n int) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var written int64
	for i := 0; written < size; i++ {
		if i%100 == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("l%d/d%d/", n, i/100), Mode: 0o755}); err != nil {
				return nil, err
			}
		}
		r, err := rand.Int(rand.Reader, big.NewInt(256))
		if err != nil {
			return nil, err
		}
		sz := min((r.Int64()+1)<<10, size-written)
		data := make([]byte, sz)
		rand.Read(data)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("l%d/d%d/f%d", n, i/100, i), Mode: 0o644, Size: sz}); err != nil {
			return nil, err
		}
		tw.Write(data)
		written += sz
	}
	return buf.Bytes(), tw.Close()
}

func run(runs int, dir string, mb int) error {
	ctx := context.Background()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/bench/big:v1")
	if err != nil {
		return err
	}
	img := empty.Image
	var tars [][]byte
	var raw int64
	for i := range 3 {
		b, err := layerTar(int64(mb)<<20/3, i)
		if err != nil {
			return err
		}
		tars = append(tars, b)
		raw += int64(len(b))
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			return err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return err
		}
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"sh"}})
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img); err != nil {
		return err
	}
	var compressed int64
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		compressed += n
	}
	fmt.Printf("image: 3 layers, %.1f MB compressed, %.1f MB of tar; stores in %s\n", float64(compressed)/1e6, float64(raw)/1e6, dir)

	var pull, convert, write []time.Duration
	var erofsBytes int64
	for i := range runs {
		work, err := os.MkdirTemp(dir, "lodge-bench-pull-")
		if err != nil {
			return err
		}
		s := &image.Store{Dir: filepath.Join(work, "images"), Layers: &layers.Store{Dir: filepath.Join(work, "layers")}}
		t0 := time.Now()
		im, err := s.Pull(ctx, ref, image.PullOptions{Keychain: authn.NewMultiKeychain()})
		if err != nil {
			os.RemoveAll(work)
			return err
		}
		pull = append(pull, time.Since(t0))
		// The conversion alone: the blobs are stored; the layer images go.
		os.RemoveAll(s.Layers.Dir)
		t0 = time.Now()
		paths, err := s.RootLayers(ctx, im)
		if err != nil {
			os.RemoveAll(work)
			return err
		}
		convert = append(convert, time.Since(t0))
		erofsBytes = 0
		for _, p := range paths {
			if fi, err := os.Stat(p); err == nil {
				erofsBytes += fi.Size()
			}
		}
		// The floor: the same uncompressed bytes written and synced.
		t0 = time.Now()
		f, err := os.Create(filepath.Join(work, "plain"))
		if err != nil {
			os.RemoveAll(work)
			return err
		}
		for _, b := range tars {
			f.Write(b)
		}
		err = f.Sync()
		f.Close()
		write = append(write, time.Since(t0))
		os.RemoveAll(work)
		if err != nil {
			return err
		}
		fmt.Printf("run %d: pull %v, convert %v, write %v\n", i+1, pull[i].Round(time.Millisecond), convert[i].Round(time.Millisecond), write[i].Round(time.Millisecond))
	}
	p, c, w := median(pull), median(convert), median(write)
	fmt.Printf("\nmedians of %d runs:\n", runs)
	fmt.Printf("  pull (download, verify, store, convert)  %7.0f ms  %6.1f MB/s of compressed layers\n", ms(p), float64(compressed)/1e6/p.Seconds())
	fmt.Printf("  convert 3 layers to erofs                %7.0f ms  %6.1f MB/s of tar (erofs images %.1f MB)\n", ms(c), float64(raw)/1e6/c.Seconds(), float64(erofsBytes)/1e6)
	fmt.Printf("  write the same bytes + fsync             %7.0f ms  %6.1f MB/s\n", ms(w), float64(raw)/1e6/w.Seconds())
	fmt.Printf("  convert / write                          %7.2f\n", c.Seconds()/w.Seconds())
	return nil
}

func median(v []time.Duration) time.Duration {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
