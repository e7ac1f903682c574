package integration

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLodgeCommit: `lodge diff` and `lodge commit` of a running container
// (frozen while its guest reads its writable layer, running after) and of
// one that has ended (read by a VM started for that, which leaves nothing
// behind): the image made runs with the container's files (added,
// changed, deleted, hard links), its environment and --change's config.
func TestLodgeCommit(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	l.must("run", "-d", "--name", "c1", "-e", "ADDED=1", "--network", "none", ref, "sh", "-c",
		"rm -f /ready; echo new > /added; rm -f /marker; grep -q changed /etc/passwd || echo changed >> /etc/passwd; mkdir -p /d; ln -f /added /d/hard; touch /ready; exec sleep 1000")
	waitReady := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for l.run("", "exec", "c1", "test", "-e", "/ready").code != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the container did not make its changes")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitReady()
	// What the runtime made for the container's mounts (/etc/hosts,
	// /etc/resolv.conf, /etc/hostname, ...) is not the container's change.
	want := "A /added\nA /d\nA /d/hard\nC /etc\nC /etc/passwd\nD /marker\nA /ready\n"
	if got := l.must("diff", "c1"); got != want {
		t.Fatalf("diff of the running container:\n%s\nwant:\n%s", got, want)
	}
	id := strings.TrimSpace(l.must("commit", "-m", "first", "-a", "Lodge Test", "-c", `CMD ["cat", "/added"]`,
		"-c", "ENV FROM_COMMIT=yes PATH=$PATH:/extra", "c1", "committed:v1"))
	if !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("commit printed %q, want the image ID", id)
	}
	if st := strings.TrimSpace(l.must("inspect", "--format", "{{.State.Status}}", "c1")); st != "running" {
		t.Fatalf("after commit the container is %q, want running (thawed)", st)
	}
	l.must("exec", "c1", "true")
	if out := l.must("run", "--rm", "--network", "none", "committed:v1"); out != "new\n" {
		t.Fatalf("the committed image's CMD printed %q, want the added file", out)
	}
	out := l.must("run", "--rm", "--network", "none", "committed:v1", "sh", "-c",
		`echo "$ADDED $FROM_IMAGE $FROM_COMMIT $PATH"; test -e /marker || echo no-marker; tail -n 1 /etc/passwd; stat -c %h /added; pwd`)
	wantOut := "1 yes yes /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/extra\nno-marker\nchanged\n2\n/etc\n"
	if out != wantOut {
		t.Fatalf("in the committed image:\n%s\nwant:\n%s", out, wantOut)
	}
	if out := l.must("run", "--rm", "--network", "none", ref, "sh", "-c", "test -e /added || echo clean"); out != "clean\n" {
		t.Fatalf("a container of the original image: %q, want none of c1's files", out)
	}
	// Refusals leave no image.
	for _, args := range [][]string{
		{"commit", "-c", "RUN touch /x", "c1", "refused:a"},
		{"commit", "c1", "Bad Name"},
		{"commit", "c1", "committed@sha256:" + strings.Repeat("a", 64)},
	} {
		if r := l.run("", args...); r.code == 0 || r.stderr == "" {
			t.Errorf("lodge %v: exit %d, stderr %q; want a refusal that says why", args, r.code, r.stderr)
		}
	}
	if imgs := l.must("images"); strings.Contains(imgs, "refused") {
		t.Errorf("a refused commit left an image:\n%s", imgs)
	}

	// Ended: read by a VM of its own, which is gone after.
	l.must("stop", "-t", "0", "c1")
	if got := l.must("diff", "c1"); got != want {
		t.Fatalf("diff of the ended container:\n%s\nwant:\n%s", got, want)
	}
	l.must("commit", "c1", "committed:v2")
	if out := l.must("run", "--rm", "--network", "none", "committed:v2", "sh", "-c", "cat /d/hard; test -e /marker || echo no-marker"); out != "new\nno-marker\n" {
		t.Fatalf("in the image of the ended container: %q", out)
	}
	ctrID := strings.TrimSpace(l.must("inspect", "--format", "{{.Id}}", "c1"))
	if procs := processesMentioning(ctrID + "-changes"); len(procs) > 0 {
		t.Errorf("the reading VM was left running: %v", procs)
	}
	if _, err := os.Stat(filepath.Join("/run/lodge/lodge", ctrID+"-changes")); !os.IsNotExist(err) {
		t.Errorf("the reading VM's state was left: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(l.dir, "containers", ctrID, "changes-*")); len(left) > 0 {
		t.Errorf("its bundle was left: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(l.dir, "images", "tmp", "*")); len(left) > 0 {
		t.Errorf("layer files left: %v", left)
	}
	// Its whole root, exported (by a VM of its own, as it has ended) and
	// imported: an image of one layer with the image's files and its own.
	exported := filepath.Join(l.dir, "c1.tar")
	l.must("export", "-o", exported, "c1")
	names := tarEntryNames(t, exported)
	for _, want := range []string{"added", "d/hard", "bin/busybox", "etc/passwd"} {
		if !names[want] {
			t.Errorf("the export lacks %s", want)
		}
	}
	for n := range names {
		if strings.HasPrefix(n, "proc/") || strings.HasPrefix(n, "sys/") || n == "marker" || strings.Contains(n, ".wh.") {
			t.Errorf("the export has %s", n)
		}
	}
	l.must("import", "-c", `CMD ["cat", "/added"]`, exported, "imported:v1")
	if out := l.must("run", "--rm", "--network", "none", "imported:v1"); out != "new\n" {
		t.Fatalf("the imported image printed %q", out)
	}
	if r := l.run("", "export", "-o", filepath.Join(l.dir, "nothere", "x.tar"), "c1"); r.code == 0 {
		t.Errorf("export to a missing directory succeeded")
	}

	// The container starts again with what it wrote, after being read.
	l.must("start", "c1")
	waitReady()
	if out := l.must("exec", "c1", "cat", "/added"); out != "new\n" {
		t.Fatalf("started again after commit: %q", out)
	}
	// An untagged commit is listed as docker lists one.
	untagged := strings.TrimSpace(l.must("commit", "--pause=false", "c1"))
	if imgs := l.must("images"); !strings.Contains(imgs, "<none>") || !strings.Contains(imgs, strings.TrimPrefix(untagged, "sha256:")[:12]) {
		t.Errorf("the untagged image is not listed as <none>:\n%s", imgs)
	}
	l.must("rm", "-f", "c1")
}

// tarEntryNames lists a tar's entries (directories without their slash).
func tarEntryNames(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = true
	}
}
