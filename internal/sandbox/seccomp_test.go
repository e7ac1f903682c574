package sandbox

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/seccompbpf"
)

// The host's cache of compiled programs gives back what it kept, whole;
// a file that is not a whole program is not taken for one; the cache
// stays bounded; and without the helper the compiler says what to do.
func TestSeccompCache(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := &SeccompCompiler{Helper: filepath.Join(dir, "missing"), Dir: filepath.Join(dir, "cache")}
	prog := &seccompbpf.Program{Flags: 4, Filter: bytes.Repeat([]byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, 3)}
	path := filepath.Join(c.Dir, "p")
	if err := c.keep(path, prog); err != nil {
		t.Fatal(err)
	}
	got, err := readSeccompProgram(path)
	if err != nil || got.Flags != prog.Flags || !bytes.Equal(got.Filter, prog.Filter) {
		t.Fatalf("read back %+v, %v; want %+v", got, err, prog)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, make([]byte, 8), append(make([]byte, 8), 1, 2, 3)} {
		os.WriteFile(path, bad, 0o600)
		if p, err := readSeccompProgram(path); err == nil {
			t.Errorf("%d bytes of cache were taken for a program: %+v", len(bad), p)
		}
	}
	for i := range maxSeccompCached {
		os.WriteFile(filepath.Join(c.Dir, strconv.Itoa(i)), nil, 0o600)
	}
	if err := c.keep(path, prog); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(c.Dir); len(ents) != 1 {
		t.Errorf("the full cache holds %d files after a keep, want 1", len(ents))
	}
	_, _, err = c.Key(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow})
	if err == nil || !strings.Contains(err.Error(), "lodge setup") {
		t.Errorf("a compile without the helper: %v, want an error that names lodge setup", err)
	}
}
