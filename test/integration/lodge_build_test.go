package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLodgeBuild: `lodge build` of a two-stage Dockerfile whose RUNs run
// in microVMs (shell and exec forms, as another USER, in the WORKDIR,
// with a build argument), whose COPYs come from the context and from the
// first stage; the image runs with what each step made. A failing RUN
// fails the build with its status and leaves no container or image.
func TestLodgeBuild(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	ctxDir := t.TempDir()
	files := map[string]string{
		"greet.sh": "#!/bin/sh\ncat /app/built.txt\n",
		"Dockerfile": "FROM " + ref + " AS app\n" +
			"ARG GREETING=hello\n" +
			"ENV APP=/app\n" +
			"WORKDIR $APP\n" +
			"COPY greet.sh ./\n" +
			`RUN chmod +x greet.sh && echo "$GREETING from $(pwd)" > built.txt && rm /marker` + "\n" +
			`RUN ["/bin/sh", "-c", "echo exec-form >> built.txt"]` + "\n" +
			"RUN <<EOF\n#!/bin/sh\necho from a script > /app/script.txt\nEOF\n" +
			"USER nobody\n" +
			"RUN id -u > /tmp/uid\n" +
			"USER root\n" +
			`CMD ["./greet.sh"]` + "\n" +
			"FROM " + ref + "\n" +
			"COPY --from=app /app/built.txt /copied.txt\n" +
			`CMD ["cat", "/copied.txt"]` + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := l.must("build", "-t", "built:first", "--target", "app", "--build-arg", "GREETING=hi", "--network", "none", ctxDir)
	if !strings.Contains(out, "Successfully tagged built:first") {
		t.Fatalf("build output:\n%s", out)
	}
	// Its history says each step, newest first.
	hist := l.must("history", "--no-trunc", "built:first")
	if i, j := strings.Index(hist, `RUN ["/bin/sh", "-c", "echo exec-form >> built.txt"]`), strings.Index(hist, "COPY greet.sh ./"); i < 0 || j < 0 || i > j {
		t.Errorf("history:\n%s", hist)
	}
	if got := l.must("run", "--rm", "--network", "none", "built:first"); got != "hi from /app\nexec-form\n" {
		t.Fatalf("the built image's CMD printed %q", got)
	}
	if got := l.must("run", "--rm", "--network", "none", "built:first", "sh", "-c", "cat /tmp/uid; test -e /marker || echo no-marker; echo $APP; cat /app/script.txt; ls -a /tmp | grep -c heredoc || true"); got != "65534\nno-marker\n/app\nfrom a script\n0\n" {
		t.Fatalf("in the built image: %q", got)
	}
	l.must("build", "-q", "-t", "built:final", "--network", "none", ctxDir)
	if got := l.must("run", "--rm", "--network", "none", "built:final"); got != "hello from /app\nexec-form\n" {
		t.Fatalf("the final stage printed %q", got)
	}
	if r := l.run("FROM "+ref+"\nCMD [\"echo\", \"from stdin\"]\n", "build", "-q", "-t", "built:stdin", "-f", "-", ctxDir); r.code != 0 {
		t.Fatalf("build -f -: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := l.must("run", "--rm", "--network", "none", "built:stdin"); got != "from stdin\n" {
		t.Fatalf("the image of a Dockerfile from stdin printed %q", got)
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Fatalf("build left containers:\n%s", ps)
	}

	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM "+ref+"\nRUN echo before; exit 3\n"), 0o644)
	r := l.run("", "build", "-t", "built:broken", "--network", "none", ctxDir)
	if r.code != 125 || !strings.Contains(r.stderr, "non-zero code: 3") || !strings.Contains(r.stdout, "before") {
		t.Fatalf("a failing RUN: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Fatalf("a failed build left containers:\n%s", ps)
	}
	if imgs := l.must("images"); strings.Contains(imgs, "broken") || strings.Contains(imgs, "lodge-build") {
		t.Fatalf("a failed build left images:\n%s", imgs)
	}

	// A build killed in a RUN leaves its step's container and names; the
	// next build removes them, its builder being gone.
	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM "+ref+"\nENV STEP=1\nRUN sleep 120\n"), 0o644)
	killed := exec.Command(l.bin, "build", "--network", "none", ctxDir)
	killed.Env = l.env
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	l.eventually("the killed build's RUN started", func() bool {
		return strings.Contains(l.must("ps", "--format", "{{.Names}}"), "lodge-build-")
	})
	killed.Process.Kill()
	killed.Wait()
	os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM "+ref+"\nENV AFTER=1\n"), 0o644)
	l.must("build", "-q", "-t", "built:after", "--network", "none", ctxDir)
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Fatalf("the killed build's container is still there:\n%s", ps)
	}
	if imgs := l.must("images"); strings.Contains(imgs, "lodge-build") {
		t.Fatalf("the killed build's names are still there:\n%s", imgs)
	}
}
