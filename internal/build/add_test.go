package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ADD of a URL (a server of the test's own on 127.0.0.1): the download
// as docker's ADD makes it (mode 0600 unless --chmod, the server's
// Last-Modified, named by the URL into a directory, not unpacked), a
// --checksum that matches and one that does not, a server's error; the
// same bytes again are the cache's step.
func TestAddURL(t *testing.T) {
	body := []byte("\x1f\x8b not really gzip, and not unpacked")
	modTime := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Last-Modified", modTime.Format(http.TimeFormat))
		w.Write(body)
	}))
	defer srv.Close()
	sum := sha256.Sum256(body)
	b, _ := newTestBuilder(t)
	ctxDir := t.TempDir()
	build := func(dockerfile string) (string, error) {
		t.Helper()
		writeFiles(t, ctxDir, map[string]string{"Dockerfile": dockerfile})
		var out bytes.Buffer
		im, err := b.Build(context.Background(), Options{Context: ctxDir, Tags: []string{"localhost/add:1"}, Out: &out})
		if err != nil {
			return out.String(), err
		}
		u := imageFiles(t, b, im)
		for p, mode := range map[string]os.FileMode{"/opt/tool.tgz": 0o600, "/bin/tool": 0o755} {
			fi, _, err := u.Lstat(p)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if fi.Mode().Perm() != mode || !fi.ModTime().Equal(modTime) {
				t.Errorf("%s: mode %v, time %v", p, fi.Mode(), fi.ModTime())
			}
			if got := readFile(t, u, p); got != string(body) {
				t.Errorf("%s = %q", p, got)
			}
		}
		return out.String(), nil
	}
	df := "FROM scratch\nADD " + srv.URL + "/dl/tool.tgz /opt/\n" +
		"ADD --chmod=755 --checksum=sha256:" + hex.EncodeToString(sum[:]) + " " + srv.URL + "/dl/tool.tgz /bin/tool\n"
	if out, err := build(df); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := build(df); err != nil || strings.Count(out, "Using cache") != 2 {
		t.Fatalf("the same downloads again: %v\n%s", err, out)
	}
	for dockerfile, want := range map[string]string{
		"FROM scratch\nADD --checksum=sha256:" + strings.Repeat("0", 64) + " " + srv.URL + "/dl/tool.tgz /x\n": "not the --checksum",
		"FROM scratch\nADD --checksum=md5:00 " + srv.URL + "/dl/tool.tgz /x\n":                                 "want sha256:",
		"FROM scratch\nADD --checksum=sha256:" + strings.Repeat("0", 64) + " Dockerfile /x\n":                  "a URL",
		"FROM scratch\nADD " + srv.URL + "/missing /x\n":                                                       "404",
		"FROM scratch\nADD " + srv.URL + "/ /x/\n":                                                             "names no file",
	} {
		if _, err := build(dockerfile); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", dockerfile, err, want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(b.Store.Dir, "tmp", "*")); len(left) > 0 {
		t.Errorf("build files left: %v", left)
	}
}
