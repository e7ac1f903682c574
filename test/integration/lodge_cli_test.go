package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	os.WriteFile(cfg, []byte("[images]\ndir = \""+filepath.Join(l.dir, "images")+"\"\ncontainers_dir = \""+filepath.Join(l.dir, "containers")+"\"\nvolumes_dir = \""+filepath.Join(l.dir, "volumes")+
		"\"\n[layers]\ndir = \""+filepath.Join(l.dir, "layers")+"\"\n"), 0o644)
	l.env = append(os.Environ(), "LODGE_CONFIG="+cfg)
	// Whatever a failed test left running goes with it.
	t.Cleanup(func() {
		for _, id := range strings.Fields(l.run("", "ps", "-a", "-q").stdout) {
			l.run("", "rm", "-f", id)
		}
	})
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
// and /linked (a link to /) and deletes /etc/group (a whiteout), served by
// a registry on 127.0.0.1.
func testImage(t *testing.T) (string, *httptest.Server) {
	t.Helper()
	return busyboxWith(t, "test/app:v1", []tarEntry{
		{tar.Header{Name: "marker", Mode: 0o644, Typeflag: tar.TypeReg}, "from the second layer\n"},
		{tar.Header{Name: "linked", Typeflag: tar.TypeSymlink, Linkname: "/"}, ""},
		{tar.Header{Name: "etc/.wh.group", Mode: 0o644, Typeflag: tar.TypeReg}, ""},
	}, func(c *v1.Config) {
		c.Env = append(c.Env, "FROM_IMAGE=yes")
		c.WorkingDir = "/etc"
		c.ExposedPorts = map[string]struct{}{"80/tcp": {}} // for -P
	})
}

// tarEntry is a layer's entry; a regular file's size is its body's.
type tarEntry struct {
	hdr  tar.Header
	body string
}

// busyboxWith is lodge's built-in busybox with one more layer of entries
// and its config changed by config, served as repo (REPO:TAG) from a
// registry of the test's on 127.0.0.1.
func busyboxWith(t *testing.T, repo string, entries []tarEntry, config func(*v1.Config)) (string, *httptest.Server) {
	t.Helper()
	base, err := image.BuiltinImage(image.BuiltinBusybox)
	if err != nil {
		t.Skip(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		tw.WriteHeader(&h)
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
	config(&cf.Config)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/" + repo
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
	// docker images REPOSITORY[:TAG] and --filter.
	repo := strings.TrimSuffix(ref, ":v1")
	for args, want := range map[string]int{repo: 1, ref: 1, repo + ":v2": 0, "app": 0, "--filter=dangling=true": 0, "--filter=reference=*/test/*": 1} {
		if q := strings.Fields(l.must("images", "-q", args)); len(q) != want {
			t.Errorf("images -q %s: %q, want %d", args, q, want)
		}
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
	// docker's default seccomp profile, enforced in the guest, unless the
	// command line says otherwise: creating a user namespace needs no
	// capability but is outside the profile.
	probe := `grep Seccomp: /proc/self/status; unshare -U true 2>/dev/null && echo unshared || echo refused`
	if out := l.must("run", "--rm", "--network", "none", ref, "sh", "-c", probe); out != "Seccomp:\t2\nrefused\n" {
		t.Errorf("run with docker's default seccomp profile: %q, want a filter that refuses unshare", out)
	}
	if out := l.must("run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined", ref, "sh", "-c", probe); out != "Seccomp:\t0\nunshared\n" {
		t.Errorf("run --security-opt seccomp=unconfined: %q, want no filter", out)
	}
	if r := l.run("", "run", "--rm", "--security-opt", "apparmor=x", ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "not supported") {
		t.Errorf("an unsupported --security-opt: exit %d, %q", r.code, r.stderr)
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
	if entries, _ := os.ReadDir(filepath.Join(l.dir, "containers")); len(entries) != 0 {
		t.Errorf("containers left after run --rm: %v", entries)
	}
}

// TestLodgeDetached: containers that outlive the command that started
// them, listed, logged, exec'd into, stopped and removed from later calls.
func TestLodgeDetached(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)

	id := strings.TrimSpace(l.must("run", "-d", "--name", "ticker", ref, "sh", "-c",
		"echo started; echo oops >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"))
	if len(id) != 64 {
		t.Fatalf("run -d printed %q, want the container's ID", id)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(l.must("logs", "ticker"), "tick 2") {
		if time.Now().After(deadline) {
			t.Fatalf("no output logged:\n%s", l.must("logs", "ticker"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	if ps := l.must("ps"); !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "ticker") || !strings.Contains(ps, "Up ") {
		t.Errorf("ps:\n%s", ps)
	}
	r := l.run("", "logs", "ticker")
	if !strings.HasPrefix(r.stdout, "started\n") || r.stderr != "oops\n" {
		t.Errorf("logs: stdout %q stderr %q", r.stdout, r.stderr)
	}
	if out := l.must("logs", "--tail", "1", "ticker"); strings.Count(out, "\n") != 1 {
		t.Errorf("logs --tail 1: %q", out)
	}
	if out := l.must("exec", "ticker", "cat", "/marker"); out != "from the second layer\n" {
		t.Errorf("exec: %q", out)
	}
	// A user by name, as docker's exec -u takes it (the image's /etc/passwd).
	if out := l.must("exec", "-u", "nobody", "ticker", "sh", "-c", "id -u; id -g"); out != "65534\n65534\n" {
		t.Errorf("exec -u nobody: %q", out)
	}
	if r := l.run("", "exec", "ticker", "sh", "-c", "exit 4"); r.code != 4 {
		t.Errorf("exec exit 4: %d", r.code)
	}
	if out := l.must("stats", "--no-stream", "ticker"); !strings.Contains(out, "ticker") || !strings.Contains(out, "MEM USAGE") {
		t.Errorf("stats:\n%s", out)
	}
	if out := l.must("top", "ticker"); !strings.Contains(out, "sleep 1") && !strings.Contains(out, "sh -c") {
		t.Errorf("top:\n%s", out)
	}
	// cp both ways.
	src := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(src, []byte("copied in\n"), 0o644)
	l.must("cp", src, "ticker:/tmp")
	if out := l.must("exec", "ticker", "cat", "/tmp/in.txt"); out != "copied in\n" {
		t.Errorf("cp into the container: %q", out)
	}
	back := filepath.Join(t.TempDir(), "marker.copy")
	l.must("cp", "ticker:/marker", back)
	if b, _ := os.ReadFile(back); string(b) != "from the second layer\n" {
		t.Errorf("cp out of the container: %q", b)
	}
	var insp []map[string]any
	if err := json.Unmarshal([]byte(l.must("inspect", "ticker")), &insp); err != nil || len(insp) != 1 || insp[0]["Id"] != id {
		t.Errorf("inspect: %v %v", insp, err)
	}
	if r := l.run("", "rm", "ticker"); r.code == 0 || !strings.Contains(r.stderr, "running") {
		t.Errorf("rm of a running container: exit %d %s", r.code, r.stderr)
	}
	l.must("stop", "-t", "1", "ticker")
	if out := strings.TrimSpace(l.must("wait", "ticker")); out != "137" {
		t.Errorf("wait after stop: %q, want 137 (sh ignores SIGTERM)", out)
	}
	if ps := l.must("ps"); strings.Contains(ps, "ticker") {
		t.Errorf("a stopped container is listed by ps:\n%s", ps)
	}
	if ps := l.must("ps", "-a"); !strings.Contains(ps, "Exited (137)") {
		t.Errorf("ps -a:\n%s", ps)
	}
	if out := l.must("logs", "ticker"); !strings.Contains(out, "tick 1") {
		t.Errorf("logs after exit: %q", out)
	}
	// cp out of an ended container (what it wrote: its writable layer,
	// read in a VM made for that), through a link of its image; none
	// into it.
	ended := filepath.Join(t.TempDir(), "ended")
	if err := os.Mkdir(ended, 0o755); err != nil {
		t.Fatal(err)
	}
	l.must("cp", "ticker:/tmp/in.txt", ended)
	l.must("cp", "ticker:/linked/marker", filepath.Join(ended, "marker"))
	if b, _ := os.ReadFile(filepath.Join(ended, "in.txt")); string(b) != "copied in\n" {
		t.Errorf("cp out of an ended container: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(ended, "marker")); string(b) != "from the second layer\n" {
		t.Errorf("cp out of an ended container through its image's link: %q", b)
	}
	// cp into an ended container: written in a VM made for that, kept
	// in its writable layer (read back by another such VM).
	late := filepath.Join(t.TempDir(), "late.txt")
	os.WriteFile(late, []byte("copied in after its end\n"), 0o644)
	l.must("cp", late, "ticker:/tmp")
	l.must("cp", "ticker:/tmp/late.txt", filepath.Join(ended, "late"))
	if b, _ := os.ReadFile(filepath.Join(ended, "late")); string(b) != "copied in after its end\n" {
		t.Errorf("cp into an ended container, read back: %q", b)
	}
	if r := l.run("", "cp", "ticker:/no/such", ended); r.code == 0 || !strings.Contains(r.stderr, "/no/such") {
		t.Errorf("cp of a missing path out of an ended container: exit %d %s", r.code, r.stderr)
	}
	l.must("rm", "ticker")
	// And out of and into a created one (docker create; docker cp; docker
	// start: an image's file out, a configuration in before its start).
	l.must("create", "--name", "fresh", "--network", "none", ref, "cat", "/etc/app.conf")
	l.must("cp", "fresh:/marker", filepath.Join(ended, "fresh"))
	if b, _ := os.ReadFile(filepath.Join(ended, "fresh")); string(b) != "from the second layer\n" {
		t.Errorf("cp out of a created container: %q", b)
	}
	conf := filepath.Join(t.TempDir(), "app.conf")
	os.WriteFile(conf, []byte("setting=1\n"), 0o644)
	l.must("cp", conf, "fresh:/etc/app.conf")
	if out := l.run("", "start", "-a", "fresh"); out.code != 0 || out.stdout != "setting=1\n" {
		t.Errorf("start -a after cp into the created container: exit %d, %q %s", out.code, out.stdout, out.stderr)
	}
	l.must("rm", "fresh")

	// attach: with -d -i the container's stdin is its own, not the
	// caller's ("early" never reaches it); an attach sends it input, gets
	// its output as it comes, each stream apart, and its exit code.
	l.run("early\n", "run", "-d", "-i", "--name", "talker", ref, "sh", "-c",
		`echo ready; while read line; do echo "got $line"; echo "err $line" >&2; [ "$line" = quit ] && exit 7; done; echo eof; exit 9`)
	for deadline := time.Now().Add(time.Minute); !strings.Contains(l.must("logs", "talker"), "ready"); time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("run -d -i: the container never started")
		}
	}
	time.Sleep(time.Second) // what the caller's stdin held would have been read by now
	if r := l.run("hello\nquit\n", "attach", "talker"); r.code != 7 || r.stdout != "got hello\ngot quit\n" || r.stderr != "err hello\nerr quit\n" {
		t.Errorf("attach: exit %d, stdout %q, stderr %q; want 7, what it said to hello and quit", r.code, r.stdout, r.stderr)
	}
	if out := l.must("logs", "talker"); strings.Contains(out, "early") || strings.Contains(out, "eof") {
		t.Errorf("the container read the stdin of the lodge run that started it:\n%s", out)
	}
	if r := l.run("", "attach", "talker"); r.code == 0 || !strings.Contains(r.stderr, "only a running container") {
		t.Errorf("attach to an exited container: exit %d, %s", r.code, r.stderr)
	}
	l.must("rm", "talker")
	// -d -i -t: the container's terminal is its log helper's; an attach
	// types into it and gets what it prints and its exit code, and ^P ^Q
	// detaches, leaving it running.
	l.must("run", "-dit", "--name", "tty", ref, "sh")
	var ttyInsp []struct{ Config struct{ Tty, OpenStdin bool } }
	if err := json.Unmarshal([]byte(l.must("inspect", "tty")), &ttyInsp); err != nil || len(ttyInsp) != 1 || !ttyInsp[0].Config.Tty || !ttyInsp[0].Config.OpenStdin {
		t.Errorf("inspect of a -dit container: %+v, %v; want Config.Tty and Config.OpenStdin", ttyInsp, err)
	}
	if r := l.run("\x10\x11", "attach", "tty"); r.code != 0 || !strings.Contains(r.stderr, "read escape sequence") {
		t.Errorf("attach, then ^P ^Q: exit %d, %s", r.code, r.stderr)
	}
	if ps := l.must("ps"); !strings.Contains(ps, "tty") {
		t.Errorf("the container ended when its attach detached:\n%s", ps)
	}
	if r := l.run("[ -t 0 ] && echo on-a-tty-$((1+2)); exit 3\n", "attach", "tty"); r.code != 3 || !strings.Contains(r.stdout, "on-a-tty-3") {
		t.Errorf("attach to a terminal: exit %d, stdout %q, stderr %q; want 3 and what the shell printed", r.code, r.stdout, r.stderr)
	}
	if out := l.must("logs", "tty"); !strings.Contains(out, "on-a-tty-3") {
		t.Errorf("logs of a container with a terminal: %q", out)
	}
	l.must("rm", "tty")
	// start -a: attached before the container starts, so its first line
	// is not missed; its exit code is start's.
	l.must("create", "--name", "later", ref, "sh", "-c", "echo first-line; echo to-stderr >&2; exit 6")
	if r := l.run("", "start", "-a", "later"); r.code != 6 || r.stdout != "first-line\n" || r.stderr != "to-stderr\n" {
		t.Errorf("start -a: exit %d, stdout %q, stderr %q; want 6 and both lines", r.code, r.stdout, r.stderr)
	}
	l.must("rm", "later")
	// The signals attach gets go on to the container (--sig-proxy).
	l.must("run", "-d", "--name", "trapper", ref, "sh", "-c", `trap "echo got-int; exit 5" INT; while :; do echo tick; sleep 0.2; done`)
	att := exec.Command(l.bin, "attach", "trapper")
	att.Env = l.env
	outR, outW, _ := os.Pipe()
	var attErr bytes.Buffer
	att.Stdout, att.Stderr = outW, &attErr
	if err := att.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	// Once it prints a tick, attach is connected and passes signals on.
	var first [4]byte
	if _, err := io.ReadFull(outR, first[:]); err != nil {
		att.Process.Kill()
		att.Wait()
		t.Fatalf("attach printed nothing: %v %s", err, attErr.String())
	}
	seen := make(chan string, 1)
	go func() { b, _ := io.ReadAll(outR); seen <- string(b) }()
	att.Process.Signal(os.Interrupt)
	err := att.Wait()
	if code := att.ProcessState.ExitCode(); code != 5 || !strings.Contains(<-seen, "got-int") {
		t.Errorf("attach given SIGINT (a ^C): %v (exit %d), %s; want the container's trap's exit 5", err, code, attErr.String())
	}
	l.must("rm", "-f", "trapper")

	// A container that ends by itself, with --rm: gone once it has.
	l.must("run", "-d", "--rm", "--name", "brief", ref, "sh", "-c", "exit 3")
	for deadline := time.Now().Add(time.Minute); strings.Contains(l.must("ps", "-a"), "brief"); {
		if time.Now().After(deadline) {
			t.Fatal("run -d --rm: the container was not removed after it ended")
		}
		time.Sleep(300 * time.Millisecond)
	}
	// --init: tini is PID 1 and hands SIGTERM on to the command (sleep as
	// PID 1 would ignore it and be killed after the grace period: 137).
	l.must("run", "-d", "--init", "--name", "inited", ref, "sleep", "1000")
	if out := l.must("exec", "inited", "cat", "/proc/1/cmdline"); !strings.HasPrefix(out, "/sbin/docker-init\x00--\x00sleep\x001000") {
		t.Errorf("--init: PID 1 is %q", out)
	}
	l.must("stop", "-t", "60", "inited")
	if out := strings.TrimSpace(l.must("wait", "inited")); out != "143" {
		t.Errorf("--init: wait after stop: %q, want 143 (sleep ended by the SIGTERM tini forwarded)", out)
	}
	l.must("rm", "inited")
	// create, then start: the command runs only once started.
	l.must("create", "--name", "later", ref, "sh", "-c", "echo ran-after-start")
	if ps := l.must("ps", "-a"); !strings.Contains(ps, "Created") {
		t.Errorf("ps -a after create:\n%s", ps)
	}
	if out := l.must("logs", "later"); out != "" {
		t.Errorf("a created container ran: %q", out)
	}
	l.must("start", "later")
	if code := strings.TrimSpace(l.must("wait", "later")); code != "0" {
		t.Errorf("wait after start: %s", code)
	}
	if out := l.must("logs", "later"); out != "ran-after-start\n" {
		t.Errorf("logs after start: %q", out)
	}
	l.must("rm", "later")
	// rm -f of a running container stops its VM and leaves nothing.
	doomed := strings.TrimSpace(l.must("run", "-d", "--name", "doomed", ref, "sleep", "1000"))
	l.must("rm", "-f", "doomed")
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Errorf("containers left: %q", ps)
	}
	time.Sleep(time.Second)
	if procs := append(processesMentioning(id), processesMentioning(doomed)...); len(procs) != 0 {
		t.Errorf("processes left: %v", procs)
	}
	if entries, _ := os.ReadDir(filepath.Join(l.dir, "containers")); len(entries) != 0 {
		t.Errorf("container directories left: %v", entries)
	}
}

// TestLodgeNetwork: the default bridge network, published ports (-p, -P),
// container to container traffic, --network none, and a port already
// published.
func TestLodgeNetwork(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("hello-over-the-bridge\n"), 0o644)
	lst, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lst.Addr().(*net.TCPAddr).Port
	lst.Close()
	pub := fmt.Sprintf("127.0.0.1:%d:80", port)
	l.must("run", "-d", "--name", "web", "-p", pub, "-v", www+":/www:ro", ref, "httpd", "-f", "-p", "80", "-h", "/www")
	defer l.run("", "rm", "-f", "web")
	if body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port)); body != "hello-over-the-bridge\n" {
		t.Fatalf("GET the published port: %q", body)
	}
	if ps := l.must("ps"); !strings.Contains(ps, fmt.Sprintf("127.0.0.1:%d->80/tcp", port)) {
		t.Errorf("ps does not show the published port:\n%s", ps)
	}
	var insp []struct {
		NetworkSettings struct {
			IP string `json:"IPAddress"`
		} `json:"NetworkSettings"`
	}
	json.Unmarshal([]byte(l.must("inspect", "web")), &insp)
	if len(insp) != 1 || net.ParseIP(insp[0].NetworkSettings.IP) == nil {
		t.Fatalf("inspect: no IP: %+v", insp)
	}
	ip := insp[0].NetworkSettings.IP
	if out := l.must("run", "--rm", ref, "wget", "-qO-", "http://"+ip+"/"); out != "hello-over-the-bridge\n" {
		t.Errorf("container -> container: %q", out)
	}
	// The command runs (ip's own failure, not Lodge's 125) and finds no eth0.
	if r := l.run("", "run", "--rm", "--network", "none", ref, "sh", "-c", "ip link show eth0"); r.code == 0 || r.code == 125 || !strings.Contains(r.stdout+r.stderr, "can't find device 'eth0'") {
		t.Errorf("--network none: exit %d, %s%s; want ip's error about a missing eth0", r.code, r.stdout, r.stderr)
	}
	// -P publishes the image's exposed port and --expose's, each on a
	// host port of the kernel's choosing, which `port` names; -p without
	// a host port does the same for one port.
	l.must("run", "-d", "--name", "auto", "-P", "--expose", "5353/udp", "-p", "127.0.0.1::8080",
		"-v", www+":/www:ro", ref, "httpd", "-f", "-p", "80", "-h", "/www")
	defer l.run("", "rm", "-f", "auto")
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(l.must("port", "auto")), "\n") {
		ctr, host, _ := strings.Cut(line, " -> ")
		got[ctr] = host
	}
	hostPort := func(ctr, ip string) int {
		h, p, err := net.SplitHostPort(got[ctr])
		n, _ := strconv.Atoi(p)
		if err != nil || h != ip || n <= 0 || n == 80 || n == 8080 || n == 5353 {
			t.Errorf("port: %s -> %q, want %s:<a free port>", ctr, got[ctr], ip)
		}
		return n
	}
	if len(got) != 3 {
		t.Errorf("port: %v, want 80/tcp, 5353/udp and 8080/tcp", got)
	}
	auto := hostPort("80/tcp", "0.0.0.0")
	hostPort("5353/udp", "0.0.0.0")
	hostPort("8080/tcp", "127.0.0.1")
	if body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", auto)); body != "hello-over-the-bridge\n" {
		t.Errorf("GET the port -P published (%d): %q", auto, body)
	}
	l.must("rm", "-f", "auto")
	if out, _ := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput(); strings.Contains(string(out), fmt.Sprintf("--dport %d ", auto)) {
		t.Errorf("the port -P published is left in iptables after rm -f")
	}
	// The same host port again: refused, nothing left.
	netnsBefore, _ := os.ReadDir("/run/netns")
	r := l.run("", "run", "--rm", "-p", pub, ref, "true")
	if r.code != 125 || !strings.Contains(r.stderr, "already published") {
		t.Errorf("a published port published again: exit %d: %s", r.code, r.stderr)
	}
	if after, _ := os.ReadDir("/run/netns"); len(after) != len(netnsBefore) {
		t.Errorf("network namespaces left by the refused run: %v -> %v", netnsBefore, after)
	}
	// A user-defined network: its containers talk, it cannot go while used.
	l.run("", "network", "rm", "lodgetestnet")
	linksBefore := hostLinks(t)
	l.must("network", "create", "lodgetestnet")
	defer l.run("", "network", "rm", "lodgetestnet")
	if ls := l.must("network", "ls"); !strings.Contains(ls, "lodgetestnet") {
		t.Errorf("network ls:\n%s", ls)
	}
	l.must("run", "-d", "--name", "peer", "--network", "lodgetestnet", "--network-alias", "files", "-v", www+":/www:ro", ref, "httpd", "-f", "-p", "80", "-h", "/www")
	json.Unmarshal([]byte(l.must("inspect", "peer")), &insp)
	peerIP := insp[0].NetworkSettings.IP
	if out := l.run("", "run", "--rm", "--network", "lodgetestnet", ref, "wget", "-qO-", "http://"+peerIP+"/"); out.stdout != "hello-over-the-bridge\n" {
		t.Errorf("on a user-defined network: %q %s", out.stdout, out.stderr)
	}
	// Its members find each other by name and alias, both ways, and
	// forget one that leaves; the default network has no names.
	l.must("run", "-d", "--name", "client", "--network", "lodgetestnet", ref, "sleep", "300")
	for _, name := range []string{"peer", "files"} {
		if out := l.run("", "exec", "client", "wget", "-qO-", "http://"+name+"/"); out.stdout != "hello-over-the-bridge\n" {
			t.Errorf("a peer by its name %s: %q %s", name, out.stdout, out.stderr)
		}
	}
	if insp := l.must("network", "inspect", "lodgetestnet"); !strings.Contains(insp, `"Name": "client"`) || !strings.Contains(insp, `"files"`) || !strings.Contains(insp, peerIP) {
		t.Errorf("network inspect lacks its members:\n%s", insp)
	}
	if out := l.run("", "exec", "peer", "ping", "-c1", "-W5", "client"); out.code != 0 {
		t.Errorf("the older member does not find the newer one: %s %s", out.stdout, out.stderr)
	}
	if out := l.run("", "run", "--rm", "--network-alias", "x", ref, "true"); out.code != 125 || !strings.Contains(out.stderr, "lodge network create") {
		t.Errorf("an alias on the default network: %d %s", out.code, out.stderr)
	}
	l.must("rm", "-f", "client")
	if hosts := l.must("exec", "peer", "cat", "/etc/hosts"); strings.Contains(hosts, "client") {
		t.Errorf("a removed member is still in the other's /etc/hosts:\n%s", hosts)
	}
	if r := l.run("", "network", "rm", "lodgetestnet"); r.code == 0 {
		t.Error("a network in use was removed")
	}
	l.must("rm", "-f", "peer")
	// Unused now: prune removes it (and never the default network).
	if out := l.must("network", "prune", "-f"); !strings.Contains(out, "lodgetestnet") || strings.Contains(l.must("network", "ls"), "lodgetestnet") {
		t.Errorf("network prune: %s", out)
	}
	// Its bridge goes with it: a bridge left with the network's address
	// and route would shadow any later network on that subnet.
	if after := hostLinks(t); len(after) != len(linksBefore) {
		t.Errorf("host interfaces after the network's removal: %v, before its creation: %v", after, linksBefore)
	}
	l.must("rm", "-f", "web")
	for _, e := range mustReadDir(t, "/run/netns") {
		if strings.HasPrefix(e, "lodge-") {
			t.Errorf("network namespace left after rm -f: %s", e)
		}
	}
	if out, _ := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput(); strings.Contains(string(out), fmt.Sprintf("--dport %d ", port)) {
		t.Errorf("port mapping left in iptables after rm -f")
	}
}

// httpGet is the body url answers within a minute ("" if none).
func httpGet(url string) string {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
	}
	return ""
}

func mustReadDir(t *testing.T, dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestLodgeVolumes: a named volume outlives its containers and cannot be
// removed while one uses it; an image's VOLUME gets an anonymous volume
// that --rm takes along.
func TestLodgeVolumes(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	l.must("run", "--rm", "--network", "none", "-v", "keep:/data", ref, "sh", "-c", "echo persisted > /data/f")
	if out := l.must("run", "--name", "reader", "--network", "none", "-v", "keep:/data:ro", ref, "sh", "-c", "cat /data/f; echo x > /data/f || echo ro-refused"); out != "persisted\nro-refused\n" {
		t.Errorf("second container read %q", out)
	}
	if vs := l.must("volume", "ls", "-q"); strings.TrimSpace(vs) != "keep" {
		t.Errorf("volume ls: %q", vs)
	}
	if r := l.run("", "volume", "rm", "keep"); r.code == 0 || !strings.Contains(r.stderr, "reader") {
		t.Errorf("volume rm of a volume in use: exit %d: %s", r.code, r.stderr)
	}
	l.must("rm", "reader")
	l.must("volume", "rm", "keep")
	if vs := l.must("volume", "ls", "-q"); vs != "" {
		t.Errorf("volumes left: %q", vs)
	}
}

// A container that fills its writable layer (1 GiB here) gets "No space
// left on device" in the guest; the sandbox keeps working, space freed in
// the container can be written again, the host is untouched and the next
// container gets a fresh layer.
func TestWritableLayerFull(t *testing.T) {
	l := newLodgeCLI(t)
	cfg := filepath.Join(l.dir, "config.toml")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("writable_gib = 1\n") // the [layers] table ends the file
	f.Close()
	ref, _ := testImage(t)
	l.must("pull", ref)
	r := l.run("", "run", "--rm", ref, "sh", "-c",
		`fallocate -l 2G /fill || echo full; echo x > /more || echo write-refused; rm -f /fill; echo y > /again && echo recovered`)
	if r.code != 0 || !strings.Contains(r.stderr+r.stdout, "No space left on device") ||
		!strings.Contains(r.stdout, "full") || !strings.Contains(r.stdout, "write-refused") || !strings.Contains(r.stdout, "recovered") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s\nwant ENOSPC in the guest, then a write after freeing space", r.code, r.stdout, r.stderr)
	}
	if out := l.must("run", "--rm", ref, "sh", "-c", "test -e /again || echo fresh"); out != "fresh\n" {
		t.Fatalf("the next container: %q, want a fresh writable layer", out)
	}
}

// hostLinks lists the host's network interfaces.
func hostLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}
