package layers

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
)

// The PAX records of a guest's changes stream (the agent's writeChanges;
// the guest package is not imported by the host).
const (
	changedRecord = "LODGE.lower" // the path is in a lower layer: "C", not "A"
	errorRecord   = "LODGE.error" // a global header: why the guest gave up
	endRecord     = "LODGE.end"   // a global header: the stream is whole
	xattrPrefix   = "SCHILY.xattr."
)

// Change is one line of `lodge diff`: Kind is 'A' (added), 'C' (changed)
// or 'D' (deleted), Path absolute.
type Change struct {
	Kind byte
	Path string
}

func (c Change) String() string { return string(c.Kind) + " " + printable(c.Path) }

// ReadChanges reads a container's changes as its guest sent them and
// returns them as `lodge diff` lists them, sorted by path. With layer set
// it also writes them there as a plain OCI layer tar: each entry as sent
// but for Lodge's own records (only xattrs are kept). The guest is
// hostile: a stream that is not a tar, names a path outside the root or
// twice, or ends early (without the end record the guest writes last)
// is refused, and the guest's own error, if it sent one, is shown bounded
// and printable.
func ReadChanges(r io.Reader, layer io.Writer) ([]Change, error) {
	var tw *tar.Writer
	if layer != nil {
		tw = tar.NewWriter(layer)
	}
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	var out []Change
	ended := false
	for {
		h, err := tr.Next()
		if err == io.EOF && ended {
			break
		}
		if err == io.EOF {
			return nil, fmt.Errorf("%w: the guest's changes ended early (its VM's log may say why)", ErrBadTar)
		}
		if ended {
			return nil, fmt.Errorf("%w: the guest's changes go on after their end", ErrBadTar)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: the guest's changes: %v (the stream ended early, or is not a tar)", ErrBadTar, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			if h.PAXRecords[endRecord] == "1" {
				ended = true
				continue
			}
			if msg, ok := h.PAXRecords[errorRecord]; ok {
				return nil, fmt.Errorf("the guest could not read the container's writable layer: %s", printable(bound(msg, 1024)))
			}
			return nil, fmt.Errorf("%w: the guest's changes carry a global header", ErrBadTar)
		}
		name, err := entryPath(h.Name)
		if err != nil {
			return nil, err
		}
		if name == "/" || seen[name] {
			return nil, fmt.Errorf("%w: the guest's changes name %s twice (or the root)", ErrBadTar, printable(name))
		}
		seen[name] = true
		if c, ok := change(name, h); ok {
			out = append(out, c)
		}
		if tw == nil {
			continue
		}
		recs := map[string]string{}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, xattrPrefix) {
				recs[k] = v
			}
		}
		h.PAXRecords, h.Xattrs, h.Format = recs, nil, tar.FormatPAX // Xattrs: the same records, deprecated
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%w: entry %s: %v", ErrBadTar, printable(name), err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, fmt.Errorf("%w: the guest's changes: %s: %v (the stream ended early)", ErrBadTar, printable(name), err)
		}
	}
	if tw != nil {
		if err := tw.Close(); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// change is the diff line of one entry, if it has one (an opaque marker
// has none: its directory's line says it changed).
func change(name string, h *tar.Header) (Change, bool) {
	dir, base := path.Split(name)
	switch {
	case base == opaqueMarker:
		return Change{}, false
	case strings.HasPrefix(base, whiteoutPrefix):
		return Change{'D', path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))}, true
	case h.PAXRecords[changedRecord] == "1":
		return Change{'C', name}, true
	}
	return Change{'A', name}, true
}

func bound(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// printable quotes s if it holds anything a terminal would act on.
func printable(s string) string {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
