package state

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteRead(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "s.json")
	type rec struct{ A string }
	if err := Write(p, rec{"one"}); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, rec{"two"}); err != nil {
		t.Fatal(err)
	}
	var r rec
	if err := Read(p, &r); err != nil || r.A != "two" {
		t.Fatalf("Read = %+v, %v", r, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	os.WriteFile(p, []byte("{"), 0o644)
	if err := Read(p, &r); err == nil {
		t.Fatal("Read accepted a torn record")
	}
}
