package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// endEntry is the global header a guest ends a whole stream with.
var endEntry = entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "end", PAXRecords: map[string]string{endRecord: "1"}}}

// guestStream is what a guest sends: the entries, then its end.
func guestStream(t *testing.T, es ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range append(es, endEntry) {
		h := e.hdr
		if h.Typeflag != tar.TypeXGlobalHeader {
			h.Size, h.Mode, h.ModTime = int64(len(e.body)), 0o644, time.Unix(1700000000, 0)
			if h.Typeflag != tar.TypeReg {
				h.Size = 0
			}
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

func changed(e entry) entry {
	e.hdr.PAXRecords = map[string]string{changedRecord: "1"}
	return e
}

// A guest's stream becomes diff lines (A, C, D; no line for an opaque
// marker) and a layer without Lodge's records, which converts to an image
// with the whiteouts overlayfs expects.
func TestReadChanges(t *testing.T) {
	capEntry := file("bin/ping", "elf")
	capEntry.hdr.PAXRecords = map[string]string{xattrPrefix + "security.capability": "\x01\x00\x00\x02"}
	b := guestStream(t,
		changed(entry{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}}),
		changed(file("etc/passwd", "root\n")),
		file("etc/.wh.motd", ""),
		file("new.txt", "added"),
		changed(entry{hdr: tar.Header{Name: "opq/", Typeflag: tar.TypeDir, Mode: 0o755}}),
		file("opq/.wh..wh..opq", ""),
		capEntry,
	)
	var layer bytes.Buffer
	got, err := ReadChanges(bytes.NewReader(b), &layer)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range got {
		lines = append(lines, c.String())
	}
	want := "A /bin/ping|C /etc|D /etc/motd|C /etc/passwd|A /new.txt|C /opq"
	if strings.Join(lines, "|") != want {
		t.Errorf("changes %q, want %q", strings.Join(lines, "|"), want)
	}
	tr := tar.NewReader(bytes.NewReader(layer.Bytes()))
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if _, ok := h.PAXRecords[changedRecord]; ok {
			t.Errorf("%s keeps Lodge's record", h.Name)
		}
		if h.Name == "bin/ping" && h.PAXRecords[xattrPrefix+"security.capability"] == "" {
			t.Error("the capability xattr was dropped")
		}
		if h.Name == "etc/passwd" {
			if body, _ := io.ReadAll(tr); string(body) != "root\n" {
				t.Errorf("etc/passwd = %q", body)
			}
		}
	}
	if n != 7 {
		t.Errorf("%d entries in the layer, want 7", n)
	}
	s := &Store{Dir: t.TempDir()}
	id := fmt.Sprintf("sha256:%x", sha256.Sum256(layer.Bytes()))
	if _, _, err := s.FromTar(context.Background(), id, bytes.NewReader(layer.Bytes()), nil); err != nil {
		t.Fatalf("the committed layer does not convert: %v", err)
	}
}

// What a hostile guest can send is refused with words that say why.
func TestReadChangesRefuses(t *testing.T) {
	full := guestStream(t, file("a", strings.Repeat("x", 4096)))
	whole, _ := mkTar(t, file("a", "x"))
	errTar := func(msg string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "error", PAXRecords: map[string]string{errorRecord: msg}})
		tw.Close()
		return buf.Bytes()
	}
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"leaves the root": {b: guestStream(t, file("../etc/passwd", "x")), want: "leaves the layer's root"},
		"absolute":        {b: guestStream(t, file("/etc/passwd", "x")), want: "absolute path"},
		"twice":           {b: guestStream(t, file("a", "1"), file("./a", "2")), want: "twice"},
		"cut short":       {b: full[:1024], want: "ended early"},
		"cut at an entry": {b: whole, want: "ended early"},
		"past its end":    {b: guestStream(t, file("a", "1"), endEntry, file("b", "2")), want: "after their end"},
		"guest's error":   {b: errTar("no writable layer\x1b[2J"), want: `"no writable layer\x1b[2J"`},
		"not a tar":       {b: []byte(strings.Repeat("garbage!", 100)), want: "not a tar"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadChanges(bytes.NewReader(tc.b), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if name != "guest's error" && !errors.Is(err, ErrBadTar) {
				t.Errorf("%v is not ErrBadTar", err)
			}
		})
	}
}

// Any stream: an error or changes, never a panic, and a layer that
// converts whenever the stream was accepted.
func FuzzReadChanges(f *testing.F) {
	t := &testing.T{}
	f.Add(guestStream(t, changed(file("etc/passwd", "x")), file("etc/.wh.gone", ""), file("d/.wh..wh..opq", "")))
	f.Fuzz(func(t *testing.T, b []byte) {
		var layer bytes.Buffer
		if _, err := ReadChanges(bytes.NewReader(b), &layer); err != nil {
			return
		}
		s := &Store{Dir: t.TempDir()}
		id := fmt.Sprintf("sha256:%x", sha256.Sum256(layer.Bytes()))
		s.FromTar(context.Background(), id, bytes.NewReader(layer.Bytes()), nil) // may refuse (links), must not panic
	})
}
