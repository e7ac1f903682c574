package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// addArchive is ADD of a local archive (tar, or tar compressed with gzip,
// bzip2 or zstd): its entries go into dst, as docker's ADD unpacks them.
// It reports false, touching nothing, for a file that is not one. The
// archive is never unpacked on the host: each entry becomes an entry of
// the layer, its content kept in a file of the build's own until the
// layer is written.
func (b *layerBuilder) addArchive(file, dst string, o copyOpts) (bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(512)
	var r io.Reader
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return true, err
		}
		defer gz.Close()
		r = gz
	case bytes.HasPrefix(head, []byte("BZh")):
		r = bzip2.NewReader(br)
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return true, err
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return true, fmt.Errorf("xz archives are not supported: recompress it with gzip or zstd")
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		r = br
	default:
		return false, nil
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		name := path.Clean("/" + h.Name)
		if strings.Contains(h.Name, "..") && hasDotDot(h.Name) {
			return true, fmt.Errorf("entry %q leaves the archive's root", h.Name)
		}
		if name == "/" {
			continue
		}
		hdr := *h
		hdr.Uname, hdr.Gname = "", ""
		if o.owner != nil {
			hdr.Uid, hdr.Gid = o.owner[0], o.owner[1]
		}
		e := &pending{hdr: hdr}
		switch h.Typeflag {
		case tar.TypeReg:
			content, err := b.keep(tr)
			if err != nil {
				return true, err
			}
			e.open = func() (io.ReadCloser, error) { return os.Open(content) }
		case tar.TypeLink:
			if hasDotDot(h.Linkname) {
				return true, fmt.Errorf("hard link %q leaves the archive's root", h.Name)
			}
			e.hdr.Linkname = strings.TrimPrefix(path.Join(dst, path.Clean("/"+h.Linkname)), "/")
		case tar.TypeDir, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		default:
			continue // PAX globals and the like carry no file
		}
		b.put(path.Join(dst, name), e)
	}
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// keep copies an archive entry's content to a file of the build's.
func (b *layerBuilder) keep(r io.Reader) (string, error) {
	f, err := os.CreateTemp(b.tmpDir, "add-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// fetched is a file ADD downloaded.
type fetched struct {
	file    string    // in the build's directory
	size    int64     // bytes
	name    string    // the URL path's last name ("" if it has none)
	modTime time.Time // the server's Last-Modified (else the epoch, so that the same bytes make the same layer)
}

// fetchURL downloads ADD's URL source into dir (it is not unpacked, as
// docker's ADD does not unpack a download); with checksum
// (sha256:HEX, ADD --checksum) the bytes must match it.
func fetchURL(ctx context.Context, src, dir, checksum string) (*fetched, error) {
	u, err := url.Parse(src)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%s: only http and https URLs are supported", src)
	}
	var want string
	if checksum != "" {
		hexSum, ok := strings.CutPrefix(checksum, "sha256:")
		if _, err := hex.DecodeString(hexSum); !ok || err != nil || len(hexSum) != 64 {
			return nil, fmt.Errorf("--checksum=%s: want sha256:<64 hex digits>", checksum)
		}
		want = strings.ToLower(hexSum)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: the server answered %s", src, resp.Status)
	}
	f, err := os.CreateTemp(dir, "add-*")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); want != "" && got != want {
		os.Remove(f.Name())
		return nil, fmt.Errorf("%s: its content is sha256:%s, not the --checksum sha256:%s", src, got, want)
	}
	out := &fetched{file: f.Name(), size: n, modTime: time.Unix(0, 0).UTC()}
	if lm, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		out.modTime = lm.UTC()
	}
	if b := path.Base(u.Path); b != "/" && b != "." {
		out.name = b
	}
	return out, nil
}
