package cli

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
)

func testRule(t *testing.T, root string, ignore ...string) *watchRule {
	t.Helper()
	pm, err := patternmatcher.New(append(slices.Clone(defaultWatchIgnore), ignore...))
	if err != nil {
		t.Fatal(err)
	}
	return &watchRule{service: "web", t: types.Trigger{Path: root, Target: "/app", Action: types.WatchActionSync}, ignore: pm}
}

func TestWatchRuleApplies(t *testing.T) {
	root := t.TempDir()
	r := testRule(t, root, "*.tmp", "node_modules")
	for p, want := range map[string]bool{
		root:                                   true,
		filepath.Join(root, "a.go"):            true,
		filepath.Join(root, "d/e/f.txt"):       true,
		filepath.Join(root, "x.tmp"):           false,
		filepath.Join(root, "node_modules/m"):  false,
		filepath.Join(root, ".git/HEAD"):       false,
		filepath.Join(root, "d/.main.go.swp"):  false,
		filepath.Join(root, "d/main.go~"):      false,
		filepath.Join(filepath.Dir(root), "o"): false,
		"/etc/passwd":                          false,
	} {
		if _, got := r.applies(p); got != want {
			t.Errorf("%s: %v, want %v", p, got, want)
		}
	}
	r.include, _ = patternmatcher.New([]string{"*.go"})
	if _, ok := r.applies(filepath.Join(root, "a.txt")); ok {
		t.Error("include *.go took a.txt")
	}
	if rel, ok := r.applies(filepath.Join(root, "a.go")); !ok || rel != "a.go" {
		t.Errorf("include *.go: a.go %q %v", rel, ok)
	}
}

func TestAddToTar(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "d/node_modules"), 0o755)
	os.WriteFile(filepath.Join(root, "d/a.txt"), []byte("aaa"), 0o640)
	os.WriteFile(filepath.Join(root, "d/node_modules/big"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(root, "d/b.tmp"), []byte("x"), 0o644)
	os.Symlink("a.txt", filepath.Join(root, "d/link"))
	r := testRule(t, root, "**/*.tmp", "**/node_modules")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	n, err := addToTar(tw, r, filepath.Join(root, "d"), "/app/d")
	if err != nil || tw.Close() != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "app/d/a.txt" {
			b, _ := io.ReadAll(tr)
			if string(b) != "aaa" || h.Mode&0o777 != 0o640 {
				t.Errorf("a.txt: %q mode %o", b, h.Mode)
			}
		}
		if h.Name == "app/d/link" && (h.Typeflag != tar.TypeSymlink || h.Linkname != "a.txt") {
			t.Errorf("link: %+v", h)
		}
	}
	want := []string{"app/d", "app/d/a.txt", "app/d/link"}
	if !slices.Equal(names, want) || n != len(want) {
		t.Errorf("entries %q (%d), want %q", names, n, want)
	}
}
