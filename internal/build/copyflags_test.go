package build

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// present fails unless the image has exactly the files of want (path:
// content) among paths, and none of the others.
func present(t *testing.T, u *imagefs.Union, want map[string]string, absent []string) {
	t.Helper()
	for p, content := range want {
		if got := readFile(t, u, p); got != content {
			t.Errorf("%s = %q, want %q", p, got, content)
		}
	}
	for _, p := range absent {
		if _, _, err := u.Lstat(p); err == nil {
			t.Errorf("%s is in the image, want it excluded", p)
		}
	}
}

// COPY and ADD --exclude, as BuildKit's: patterns relative to each source
// (a source directory's content, a source file's name), a pattern from an
// ARG, a stage as the source.
func TestCopyExclude(t *testing.T) {
	b, _ := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"dir1/f101.png": "2", "dir1/f102.txt": "3", "dir2/f201.pdf": "6", "dir2/f203.png": "8",
		"dir3/f301.mp3": "9", "dir3/f302.mpeg": "10", "top.txt": "t", "top.md": "m",
		"Dockerfile": "FROM scratch AS s\n" +
			"COPY --exclude=*/*.png --exclude=Dockerfile . /1\n" +
			"ADD --exclude=*.mp3 dir3/ /3/\n" +
			"COPY --exclude=*.mp3 --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/\n" +
			"ADD --exclude=* dir* /6/\n" +
			"ARG PAT=*.mpeg\n" +
			"COPY --exclude=$PAT dir3 /7/\n" +
			"COPY --exclude=*.md top.* /8/\n" +
			"FROM scratch\n" +
			"COPY --from=s --exclude=1/dir2 --exclude=**/*.mpeg / /x/\n",
	})
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	present(t, imageFiles(t, b, im), map[string]string{
		"/x/1/dir1/f102.txt": "3", "/x/1/dir3/f301.mp3": "9", "/x/1/top.md": "m",
		"/x/7/f301.mp3": "9", "/x/8/top.txt": "t",
	}, []string{
		"/x/1/dir1/f101.png", "/x/1/dir2", "/x/1/Dockerfile", "/x/1/dir3/f302.mpeg", "/x/4/f302.mpeg",
		"/x/3/f301.mp3", "/x/3/f302.mpeg", "/x/4/f101.png", "/x/4/f102.txt", "/x/4/f201.pdf", "/x/4/f301.mp3",
		"/x/6/f101.png", "/x/6/f301.mp3", "/x/7/f302.mpeg", "/x/8/top.md",
	})
	// /6 exists, empty: everything in it was excluded.
	u := imageFiles(t, b, im)
	if !u.IsDir("/x/6") {
		t.Error("ADD --exclude=* dir* made no destination directory")
	}
	// The stage itself, before the last COPY's exclusions.
	if im, err = b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard, Target: "s"}); err != nil {
		t.Fatal(err)
	}
	present(t, imageFiles(t, b, im), map[string]string{"/3/f302.mpeg": "10", "/4/f302.mpeg": "10", "/1/dir2/f201.pdf": "6"}, nil)
}

// COPY --parents, as BuildKit's: the source's path kept below the
// destination, or what follows a "/./" in the source; wildcards, ** and a
// stage as the source.
func TestCopyParents(t *testing.T) {
	b, _ := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"foo1/foo2/bar": "bar", "foo1/foo2/baz": "baz",
		"a/b/c/d/foo": "foo", "a/b/c/d/e/bay": "bay", "a/b2/c/d/e/bar": "bar2", "a/b/c2/d/x": "x",
		"Dockerfile": "FROM scratch AS s\n" +
			"COPY --parents foo1/foo2/bar /\n" +
			"WORKDIR /test\n" +
			"COPY --parents foo1/foo2/ba* .\n" +
			"COPY --parents a/b/./c/d /out/\n" +
			"COPY --parents a/./*/c /out2/\n" +
			"COPY --parents a/b*/./c/**/e /out3/\n" +
			"COPY --parents ./a/b/c/d/. /out4/\n" +
			"COPY --parents=false foo1/foo2/bar /nop\n" +
			"FROM scratch\n" +
			"COPY --from=s --parents /test/foo1/./foo2 /out/ /s/\n",
	})
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	present(t, imageFiles(t, b, im), map[string]string{
		"/s/foo2/bar": "bar", "/s/foo2/baz": "baz",
		"/s/out/c/d/foo": "foo", "/s/out/c/d/e/bay": "bay",
	}, []string{"/s/test", "/s/out/a"})

	// The first stage alone.
	im, err = b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard, Target: "s"})
	if err != nil {
		t.Fatal(err)
	}
	present(t, imageFiles(t, b, im), map[string]string{
		"/foo1/foo2/bar": "bar", "/test/foo1/foo2/bar": "bar", "/test/foo1/foo2/baz": "baz",
		"/out/c/d/foo": "foo", "/out2/b/c/d/foo": "foo", "/out2/b2/c/d/e/bar": "bar2",
		"/out3/c/d/e/bay": "bay", "/out3/c/d/e/bar": "bar2", "/out4/a/b/c/d/foo": "foo", "/nop": "bar",
	}, []string{"/out/a", "/out/d", "/out2/a", "/out3/a", "/out3/c2", "/out4/c"})
}

func TestTakeCopyFlags(t *testing.T) {
	for _, tc := range []struct {
		dockerfile, err string
		want            map[int]copyExtra
	}{
		{"FROM scratch\nCOPY --parents --exclude=a --exclude=b/** x /y\nADD --exclude=c z /w\nCOPY --from=s --chmod=644 k /k\n", "",
			map[int]copyExtra{2: {parents: true, exclude: []string{"a", "b/**"}}, 3: {exclude: []string{"c"}}}},
		{"FROM scratch\nCOPY --parents=maybe x /y\n", "--parents=maybe", nil},
		{"FROM scratch\nCOPY --exclude x /y\n", "--exclude needs a pattern", nil},
		{"FROM scratch\nCOPY --exclude= x /y\n", "--exclude needs a pattern", nil},
	} {
		res, err := parser.Parse(strings.NewReader(tc.dockerfile))
		if err != nil {
			t.Fatal(err)
		}
		got, err := takeCopyFlags(res.AST)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error with %q", tc.dockerfile, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.dockerfile, err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: %v, want %v", tc.dockerfile, got, tc.want)
		}
		for line, w := range tc.want {
			if g := got[line]; g.parents != w.parents || strings.Join(g.exclude, ",") != strings.Join(w.exclude, ",") {
				t.Errorf("%q line %d: %+v, want %+v", tc.dockerfile, line, g, w)
			}
		}
		// What is left is the parser's: --from and --chmod stay.
		if f := res.AST.Children[3].Flags; strings.Join(f, " ") != "--from=s --chmod=644" {
			t.Errorf("flags left on COPY --from: %q", f)
		}
	}
	// ADD has no --parents: the parser refuses it, as docker's.
	res, _ := parser.Parse(strings.NewReader("FROM scratch\nADD --parents x /y\n"))
	if _, err := takeCopyFlags(res.AST); err != nil {
		t.Fatal(err)
	}
	if f := res.AST.Children[1].Flags; len(f) != 1 {
		t.Errorf("ADD --parents taken: %q", f)
	}
}

func TestParentsKept(t *testing.T) {
	for _, tc := range []struct{ pattern, match, want string }{
		{"foo1/foo2/bar", "/foo1/foo2/bar", "foo1/foo2/bar"},
		{"/test/a/b/./c/d", "/test/a/b/c/d", "c/d"},
		{"/test/a/b/c/d/.", "/test/a/b/c/d", "test/a/b/c/d"},
		{"./test/a/b/c/d", "/test/a/b/c/d", "test/a/b/c/d"},
		{"/test/a/./b/./c", "/test/a/b/c", "b/c"},
		{"/test/a/./*/c", "/test/a/b2/c", "b2/c"},
		{"/test/a/b*/./c/**/e", "/test/a/b2/c/d/e", "c/d/e"},
		{"./x/./y", "/x/y", "y"},
	} {
		if got := parentsKept(tc.pattern, tc.match); got != tc.want {
			t.Errorf("parentsKept(%q, %q) = %q, want %q", tc.pattern, tc.match, got, tc.want)
		}
	}
}
