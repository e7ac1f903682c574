package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/lodgeruntime/lodge/internal/image"
)

// lodgeCLI runs bin/lodge with a config of its own (image and layer
// stores in the test's directories).
type lodgeCLI struct {
	t   *testing.T
	bin string
	env []string
	dir string
}

func newLodgeCLI(t *testing.T) *lodgeCLI {
	t.Helper()
	l := &lodgeCLI{t: t, bin: filepath.Join(binDir(t), "lodge"), dir: t.TempDir()}
	cfg := filepath.Join(l.dir, "config.toml")
	os.WriteFile(cfg, []byte("[images]\ndir = \""+filepath.Join(l.dir, "images")+"\"\n[layers]\ndir = \""+filepath.Join(l.dir, "layers")+"\"\n"), 0o644)
	l.env = append(os.Environ(), "LODGE_CONFIG="+cfg)
	return l
}

func (l *lodgeCLI) run(stdin string, args ...string) result {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.bin, args...)
	cmd.Env = l.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("lodge %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (l *lodgeCLI) must(args ...string) string {
	l.t.Helper()
	r := l.run("", args...)
	if r.code != 0 {
		l.t.Fatalf("lodge %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// testImage is the built-in busybox image plus a layer that adds /marker
// and deletes /etc/group (a whiteout), served by a registry on 127.0.0.1.
func testImage(t *testing.T) (string, *httptest.Server) {
	t.Helper()
	base, err := image.BuiltinImage(image.BuiltinBusybox)
	if err != nil {
		t.Skip(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct{ name, body string }{{"marker", "from the second layer\n"}, {"etc/.wh.group", ""}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Env = append(cf.Config.Env, "FROM_IMAGE=yes")
	cf.Config.WorkingDir = "/etc"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/app:v1"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return ref, srv
}

func TestLodgePullRun(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)

	r := l.run("", "pull", ref)
	if r.code != 0 || !strings.Contains(r.stderr, "downloaded") {
		t.Fatalf("pull: exit %d\n%s", r.code, r.stderr)
	}
	if r = l.run("", "pull", ref); r.code != 0 || strings.Count(r.stderr, ": exists") != 2 {
		t.Errorf("second pull should fetch nothing:\n%s", r.stderr)
	}
	imgs := l.must("images")
	if !strings.Contains(imgs, "test/app") || !strings.Contains(imgs, "v1") || !strings.HasPrefix(imgs, "REPOSITORY") {
		t.Errorf("images:\n%s", imgs)
	}
	if q := strings.Fields(l.must("images", "-q")); len(q) != 1 || len(q[0]) != 12 {
		t.Errorf("images -q: %q", q)
	}

	// The image's config and the layers, whiteout included, in a VM.
	out := l.must("run", "--rm", ref, "sh", "-c", `cat /marker; test -e /etc/group && echo group-visible; echo "$FROM_IMAGE $(pwd)"; uname -r`)
	want := "from the second layer\nyes /etc\n"
	if !strings.HasPrefix(out, want) {
		t.Errorf("run: %q, want it to start with %q", out, want)
	}
	if host, _ := os.ReadFile("/proc/sys/kernel/osrelease"); strings.Contains(out, strings.TrimSpace(string(host))) {
		t.Errorf("the container ran on the host kernel: %q", out)
	}
	// Flags: -e, -w, -u, exit status, stdin only with -i.
	if out := l.must("run", "--rm", "-e", "A=1", "-w", "/tmp", "-u", "nobody", ref, "sh", "-c", `echo "$A $(pwd) $(id -u)"`); out != "1 /tmp 65534\n" {
		t.Errorf("-e -w -u: %q", out)
	}
	if r := l.run("", "run", "--rm", ref, "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exit 7 reported as %d", r.code)
	}
	if r := l.run("piped\n", "run", "--rm", "-i", ref, "cat"); r.stdout != "piped\n" {
		t.Errorf("-i: %q", r.stdout)
	}
	if r := l.run("", "run", "--rm", ref, "/no/such/binary"); r.code != 127 {
		t.Errorf("missing command: exit %d, want 127\n%s", r.code, r.stderr)
	}
	if r := l.run("", "run", "--rm", "--pull", "never", "127.0.0.1:1/none:v1", "true"); r.code != 125 || !strings.Contains(r.stderr, "no such image") {
		t.Errorf("unknown image: exit %d: %s", r.code, r.stderr)
	}
	// -v: read-only honoured, read-write written through.
	ro, rw := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(ro, "f"), []byte("host file\n"), 0o644)
	r = l.run("", "run", "--rm", "-v", ro+":/ro:ro", "-v", rw+":/rw", ref, "sh", "-c", "cat /ro/f; echo x > /ro/f || echo ro-refused; echo written > /rw/out")
	if !strings.Contains(r.stdout, "host file") || !strings.Contains(r.stdout, "ro-refused") {
		t.Errorf("-v: %q %s", r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(ro, "f")); string(b) != "host file\n" {
		t.Errorf("read-only volume changed: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(rw, "out")); string(b) != "written\n" {
		t.Errorf("read-write volume: %q", b)
	}

	// save, rmi, load: the same image back, runnable.
	tarPath := filepath.Join(t.TempDir(), "app.tar")
	l.must("save", "-o", tarPath, ref)
	l.must("rmi", ref)
	if strings.Contains(l.must("images"), "test/app") {
		t.Fatal("rmi left the image listed")
	}
	if out := l.must("load", "-i", tarPath); !strings.Contains(out, "Loaded image: "+ref) {
		t.Errorf("load: %q", out)
	}
	if out := l.must("run", "--rm", ref, "cat", "/marker"); out != "from the second layer\n" {
		t.Errorf("run after load: %q", out)
	}
	if entries, _ := os.ReadDir("/run/lodge/lodge"); len(entries) > 1 {
		t.Errorf("bundles left in /run/lodge/lodge: %v", entries)
	}
}
