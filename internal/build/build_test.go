package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/erofs/go-erofs"

	"github.com/lodgeruntime/lodge/internal/image"
	"github.com/lodgeruntime/lodge/internal/imagefs"
	"github.com/lodgeruntime/lodge/internal/layers"
)

// fakeRunner stands in for the VM a RUN runs in (a unit seam): it
// records the steps and answers each with a layer that adds /ran.
type fakeRunner struct {
	steps []RunStep
	check func(RunStep) error // looks at a step while it runs (its mounts)
	store *image.Store
}

func (f *fakeRunner) Run(ctx context.Context, imageID string, step RunStep, out io.Writer, layer io.Writer) error {
	f.steps = append(f.steps, step)
	if _, err := f.store.Find(imageID); err != nil {
		return fmt.Errorf("the step's image, as lodge run would find it: %w", err)
	}
	if f.check != nil {
		if err := f.check(step); err != nil {
			return err
		}
	}
	if strings.Contains(strings.Join(step.Args, " "), "fail") {
		return errors.New("the command returned a non-zero code: 1")
	}
	tw := tar.NewWriter(layer)
	body := strings.Join(step.Args, " ")
	tw.WriteHeader(&tar.Header{Name: "ran", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
	tw.Write([]byte(body))
	return tw.Close()
}

func newTestBuilder(t *testing.T) (*Builder, *fakeRunner) {
	t.Helper()
	dir := t.TempDir()
	st := &image.Store{Dir: filepath.Join(dir, "images"), Layers: &layers.Store{Dir: filepath.Join(dir, "layers")}}
	r := &fakeRunner{store: st}
	return &Builder{Store: st, Runner: r}, r
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// files of an image as a container would see them: the merged view of
// its layer images.
func imageFiles(t *testing.T, b *Builder, im *image.Image) *imagefs.Union {
	t.Helper()
	lays, err := b.Store.RootLayers(context.Background(), im)
	if err != nil {
		t.Fatal(err)
	}
	u, err := imagefs.Open(lays)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func readFile(t *testing.T, u *imagefs.Union, p string) string {
	t.Helper()
	_, l, err := u.Lstat(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	b, err := fs.ReadFile(l, imagefs.Rel(p))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return string(b)
}

func gzipTar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// A Dockerfile of two stages built on the host alone (its RUNs through
// the fake runner): COPY of files and directories (with .dockerignore,
// --chown, --chmod, a wildcard), ADD unpacking an archive, WORKDIR made,
// COPY --from an earlier stage, ARG and ENV expanded, and the config of
// the image made.
func TestBuildTwoStages(t *testing.T) {
	b, r := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"app/main.sh":   "echo main\n",
		"app/lib/x.sh":  "x\n",
		"app/secret":    "no\n",
		"notes.txt":     "n\n",
		"a.conf":        "a\n",
		"b.conf":        "b\n",
		".dockerignore": "app/secret\n",
		"Dockerfile": `ARG BASE=scratch
FROM $BASE AS build
ARG VERSION=1.0
ENV APP_VERSION=$VERSION
COPY app /app/
COPY --chown=7:8 --chmod=0750 notes.txt /app/notes
COPY --chmod=4755 notes.txt /app/suid
COPY *.conf /etc/conf/
ADD bundle.tar.gz /opt/
WORKDIR /srv/data
RUN echo built $APP_VERSION
FROM scratch
COPY --from=build /app/lib /lib
COPY --from=build /opt/inside.txt /inside.txt
COPY --from=build /app/suid /suid
WORKDIR /srv
ENV MODE=prod
LABEL stage=final
EXPOSE 8080
CMD ["/app/main.sh"]
`,
	})
	if err := os.WriteFile(filepath.Join(ctxDir, "bundle.tar.gz"), gzipTar(t, map[string]string{"inside.txt": "unpacked\n"}), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Tags: []string{"localhost/app:1"},
		BuildArgs: map[string]string{"VERSION": "2.5"}, Network: "none", Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(r.steps) != 1 || !reflect.DeepEqual(r.steps[0].Args, []string{"/bin/sh", "-c", "echo built $APP_VERSION"}) ||
		r.steps[0].Workdir != "/srv/data" || r.steps[0].Network != "none" || !contains(r.steps[0].Env, "APP_VERSION=2.5") || !contains(r.steps[0].Env, "VERSION=2.5") {
		t.Fatalf("RUN steps %+v", r.steps)
	}
	if time.Since(im.Config.Created.Time) > time.Hour {
		t.Errorf("the image was created %v, want now (not its base's time)", im.Config.Created)
	}
	c := im.Config.Config
	if !reflect.DeepEqual(c.Cmd, []string{"/app/main.sh"}) || c.WorkingDir != "/srv" || !contains(c.Env, "MODE=prod") ||
		c.Labels["stage"] != "final" || contains(c.Env, "APP_VERSION=2.5") {
		t.Fatalf("final config %+v", c)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok {
		t.Fatalf("ports %v", c.ExposedPorts)
	}
	u := imageFiles(t, b, im)
	if got := readFile(t, u, "/lib/x.sh"); got != "x\n" {
		t.Errorf("/lib/x.sh = %q", got)
	}
	if got := readFile(t, u, "/inside.txt"); got != "unpacked\n" {
		t.Errorf("/inside.txt = %q", got)
	}
	if !u.IsDir("/srv") {
		t.Error("WORKDIR /srv was not made")
	}
	if fi, _, err := u.Lstat("/suid"); err != nil || imagefs.Mode(fi) != fs.ModeSetuid|0o755 {
		t.Errorf("/suid from the stage: %v, want its set-user-ID bit kept", err)
	}
	if _, _, err := u.Lstat("/app"); err == nil {
		t.Error("the final stage has the first stage's /app")
	}
	// The first stage, by its tag-less image.
	first := b.mustStage(t, ctxDir, "build")
	fu := imageFiles(t, b, first)
	if got := readFile(t, fu, "/app/main.sh"); got != "echo main\n" {
		t.Errorf("/app/main.sh = %q", got)
	}
	if _, _, err := fu.Lstat("/app/secret"); err == nil {
		t.Error(".dockerignore's app/secret was copied")
	}
	fi, _, err := fu.Lstat("/app/notes")
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys(); fi.Mode().Perm() != 0o750 || uidOf(st) != [2]int{7, 8} {
		t.Errorf("/app/notes: mode %v owner %v, want 0750 7:8", fi.Mode(), uidOf(st))
	}
	for _, p := range []string{"/etc/conf/a.conf", "/etc/conf/b.conf", "/opt/inside.txt", "/ran"} {
		if _, _, err := fu.Lstat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if !u.IsDir("/srv") || !fu.IsDir("/srv/data") {
		t.Error("WORKDIR's directories missing")
	}
	// No intermediate image keeps a name.
	refs, _ := b.Store.List()
	for _, ref := range refs {
		if strings.Contains(ref.Name, "lodge-build-") {
			t.Errorf("intermediate image left named: %s", ref.Name)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(b.Store.Dir, "tmp", "*")); len(left) > 0 {
		t.Errorf("build files left: %v", left)
	}
}

func (b *Builder) mustStage(t *testing.T, ctxDir, target string) *image.Image {
	t.Helper()
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Target: target, Network: "none", Out: io.Discard,
		BuildArgs: map[string]string{"VERSION": "2.5"}})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// What cannot be built says why, and leaves no image or file.
func TestBuildRefusals(t *testing.T) {
	for name, tc := range map[string]struct{ dockerfile, want string }{
		"no FROM":         {"RUN true\n", "FROM"},
		"missing source":  {"FROM scratch\nCOPY nothere /x\n", "no such file"},
		"outside context": {"FROM scratch\nCOPY ../etc/passwd /x\n", "outside the build context"},
		"COPY of a URL":   {"FROM scratch\nCOPY http://127.0.0.1/x /x\n", "cannot be a URL"},
		"ADD of ftp":      {"FROM scratch\nADD ftp://127.0.0.1/x /x\n", "only http and https"},
		"RUN fails":       {"FROM scratch\nRUN fail now\n", "non-zero code"},
		"RUN --mount ssh": {"FROM scratch\nRUN --mount=type=ssh true\n", "not supported"},
		"secret needed":   {"FROM scratch\nRUN --mount=type=secret,id=tok,required true\n", "--secret id=tok"},
		"bind outside":    {"FROM scratch\nRUN --mount=source=../etc,target=/e true\n", "outside the build context"},
		"cache no target": {"FROM scratch\nRUN --mount=type=cache true\n", "target"},
		"bad target":      {"FROM scratch\n", "no stage"},
		"bad chown":       {"FROM scratch\nCOPY --chown=nobody Dockerfile /x\n", "chown"},
	} {
		t.Run(name, func(t *testing.T) {
			b, _ := newTestBuilder(t)
			ctxDir := t.TempDir()
			writeFiles(t, ctxDir, map[string]string{"Dockerfile": tc.dockerfile})
			o := Options{Context: ctxDir, Tags: []string{"localhost/refused:1"}, Out: io.Discard}
			if name == "bad target" {
				o.Target = "nope"
			}
			_, err := b.Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if refs, _ := b.Store.List(); len(refs) > 0 {
				t.Errorf("images left: %v", refs)
			}
			if left, _ := filepath.Glob(filepath.Join(b.Store.Dir, "tmp", "*")); len(left) > 0 {
				t.Errorf("build files left: %v", left)
			}
		})
	}
}

func uidOf(sys any) [2]int {
	if st, ok := sys.(*erofs.Stat); ok {
		return [2]int{int(st.UID), int(st.GID)}
	}
	return [2]int{-1, -1}
}

// A build again with the same inputs takes each step from the cache
// (no RUN runs; the same image), a changed file of the context makes its
// COPY and what follows run again, and --no-cache runs everything.
func TestBuildCache(t *testing.T) {
	b, r := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"f.txt":      "one\n",
		"Dockerfile": "FROM scratch\nENV A=1\nRUN first\nCOPY f.txt /f.txt\nRUN second\n",
	})
	build := func(noCache bool) (*image.Image, string) {
		t.Helper()
		var out bytes.Buffer
		im, err := b.Build(context.Background(), Options{Context: ctxDir, Tags: []string{"localhost/c:1"}, Out: &out, NoCache: noCache})
		if err != nil {
			t.Fatal(err)
		}
		return im, out.String()
	}
	first, _ := build(false)
	if len(r.steps) != 2 {
		t.Fatalf("%d RUNs, want 2", len(r.steps))
	}
	again, out := build(false)
	if len(r.steps) != 2 || strings.Count(out, "Using cache") != 4 || again.ConfigDigest != first.ConfigDigest {
		t.Fatalf("a build again ran %d RUNs, image %s (first %s):\n%s", len(r.steps)-2, again.ConfigDigest, first.ConfigDigest, out)
	}
	writeFiles(t, ctxDir, map[string]string{"f.txt": "two\n"})
	changed, out := build(false)
	if len(r.steps) != 3 || strings.Count(out, "Using cache") != 2 || changed.ConfigDigest == first.ConfigDigest {
		t.Fatalf("after a change: %d RUNs in all, want 3:\n%s", len(r.steps), out)
	}
	if got := readFile(t, imageFiles(t, b, changed), "/f.txt"); got != "two\n" {
		t.Fatalf("/f.txt = %q", got)
	}
	if _, out = build(true); len(r.steps) != 5 || strings.Contains(out, "Using cache") {
		t.Fatalf("--no-cache: %d RUNs in all, want 5:\n%s", len(r.steps), out)
	}
}

// Here-documents run as BuildKit runs them (a lone one as the shell's
// text, or as a script of its own when it names its interpreter; one a
// command reads, given back to the shell), and COPY takes --link.
func TestBuildHeredocsAndCopyFlags(t *testing.T) {
	b, r := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"logs/a.txt": "a\n",
		"logs/b.log": "b\n",
		"Dockerfile": "FROM scratch\n" +
			"RUN <<EOF\necho one\necho two\nEOF\n" +
			"RUN <<EOF\n#!/usr/bin/env python3\nprint(\"hi\")\nEOF\n" +
			"RUN cat > /x <<EOT\ncontent\nEOT\n" +
			"COPY --link logs/ /logs/\n",
	})
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Tags: []string{"localhost/h:1"}, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.steps) != 3 {
		t.Fatalf("%d RUNs", len(r.steps))
	}
	want := []RunStep{
		{Args: []string{"/bin/sh", "-c", "echo one\necho two\n"}},
		{Args: []string{"/bin/sh", "-c", heredocScript}, Stdin: []byte("#!/usr/bin/env python3\nprint(\"hi\")\n")},
		{Args: []string{"/bin/sh", "-c", "cat > /x <<EOT\ncontent\nEOT"}},
	}
	for i, w := range want {
		if !reflect.DeepEqual(r.steps[i].Args, w.Args) || string(r.steps[i].Stdin) != string(w.Stdin) {
			t.Errorf("RUN %d: %q stdin %q, want %q stdin %q", i, r.steps[i].Args, r.steps[i].Stdin, w.Args, w.Stdin)
		}
	}
	u := imageFiles(t, b, im)
	if got := readFile(t, u, "/logs/a.txt"); got != "a\n" {
		t.Errorf("/logs/a.txt = %q", got)
	}
	if got := readFile(t, u, "/logs/b.log"); got != "b\n" {
		t.Errorf("/logs/b.log = %q", got)
	}
}

// A stage's root is a source as any directory is: COPY --from=STAGE /
// copies all of it (it failed with "invalid argument": the root is no
// layer's entry).
func TestCopyFromStageRoot(t *testing.T) {
	b, _ := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"a": "a\n", "d/b": "b\n",
		"Dockerfile": "FROM scratch AS s\nCOPY a /a\nCOPY d /d\nFROM scratch\nCOPY --from=s / /x/\n"})
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	u := imageFiles(t, b, im)
	if got := readFile(t, u, "/x/a") + readFile(t, u, "/x/d/b"); got != "a\nb\n" {
		t.Errorf("the stage's root copied: %q", got)
	}
}
