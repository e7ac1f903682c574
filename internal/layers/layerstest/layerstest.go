// Package layerstest makes layer images for tests, as a pull makes them.
package layerstest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/lodgeruntime/lodge/internal/layers"
)

// Entry is one entry of a layer tar; a regular file's size is its body's.
type Entry struct {
	Hdr  tar.Header
	Body string
}

// Image converts a layer tar of entries to an erofs image in s.
func Image(t testing.TB, s *layers.Store, entries ...Entry) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.Body))
	}
	tw.Close()
	p, _, err := s.FromTar(context.Background(), fmt.Sprintf("sha256:%x", sha256.Sum256(buf.Bytes())), bytes.NewReader(buf.Bytes()), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Files is Image of regular files (0644, root's), in the order of their
// names.
func Files(t testing.TB, s *layers.Store, files map[string]string) string {
	t.Helper()
	var entries []Entry
	for _, name := range slices.Sorted(maps.Keys(files)) {
		entries = append(entries, Entry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, files[name]})
	}
	return Image(t, s, entries...)
}
