package integration

import (
	"fmt"
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

	// A build killed in a RUN leaves its step's container, names and files;
	// the next build removes them, its builder being gone.
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
	if left, _ := filepath.Glob(filepath.Join(l.dir, "images", "tmp", "build-*")); len(left) > 0 {
		t.Fatalf("the killed build's files are still there: %v", left)
	}
}

// TestLodgeBuildMounts: RUN --mount in a real build: the context bound
// read-only (without what .dockerignore excludes), a file of an earlier
// stage, a cache directory that keeps what one build's step wrote for
// the next, a tmpfs, and a secret as a file and as a variable; none of
// them, nor the secret, is in the image. lodge builder prune removes the
// cache.
func TestLodgeBuildMounts(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	ctxDir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "tok")
	files := map[string]string{
		"input.txt":     "one\n",
		"ignored.txt":   "no\n",
		".dockerignore": "ignored.txt\n",
		"Dockerfile": "FROM " + ref + " AS tool\n" +
			"RUN echo from-tool > /tool.txt\n" +
			"FROM " + ref + "\n" +
			"WORKDIR /w\n" +
			"RUN --mount=target=/ctx --mount=from=tool,source=/tool.txt,target=/t/tool.txt " +
			"--mount=type=cache,target=/cache --mount=type=tmpfs,target=/scratch " +
			"--mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOKEN <<EOF\n" +
			"cat /ctx/input.txt /t/tool.txt > out.txt\n" +
			"test -e /ctx/ignored.txt || echo not-ignored-file >> out.txt\n" +
			"touch /ctx/x 2>/dev/null || echo ctx-read-only >> out.txt\n" +
			"echo run >> /cache/runs; wc -l < /cache/runs | tr -d ' ' >> out.txt\n" +
			"grep -q ' /scratch tmpfs ' /proc/mounts && echo scratch-tmpfs >> out.txt\n" +
			"test \"$(cat /run/secrets/tok)\" = s3cret && echo secret-file >> out.txt\n" +
			"test \"$TOKEN\" = s3cret && echo secret-env >> out.txt\n" +
			"EOF\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(ctxDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(secret, []byte("s3cret"), 0o600)
	l.must("build", "-q", "-t", "mounts:1", "--network", "none", "--secret", "id=tok,src="+secret, ctxDir)
	const after = "from-tool\nnot-ignored-file\nctx-read-only\n%d\nscratch-tmpfs\nsecret-file\nsecret-env\n"
	if got := l.must("run", "--rm", "--network", "none", "mounts:1", "cat", "/w/out.txt"); got != "one\n"+fmt.Sprintf(after, 1) {
		t.Fatalf("the step wrote %q", got)
	}
	left := "for p in /ctx /t /cache /scratch /run/secrets; do test -e $p && echo $p; done; grep -rl s3cret /w /run /tmp /etc /root 2>/dev/null; true"
	if got := l.must("run", "--rm", "--network", "none", "mounts:1", "sh", "-c", left); got != "" {
		t.Fatalf("the image holds the step's mounts or its secret: %q", got)
	}
	// A changed bound file runs the step again; its cache holds what the
	// first build wrote.
	os.WriteFile(filepath.Join(ctxDir, "input.txt"), []byte("two\n"), 0o644)
	l.must("build", "-q", "-t", "mounts:2", "--network", "none", "--secret", "id=tok,src="+secret, ctxDir)
	if got := l.must("run", "--rm", "--network", "none", "mounts:2", "cat", "/w/out.txt"); got != "two\n"+fmt.Sprintf(after, 2) {
		t.Fatalf("the step again wrote %q", got)
	}
	if r := l.run("FROM "+ref+"\nRUN --mount=type=secret,id=tok,required true\n", "build", "-f", "-", ctxDir); r.code != 125 || !strings.Contains(r.stderr, "--secret id=tok") {
		t.Fatalf("a required secret not given: exit %d %s", r.code, r.stderr)
	}
	if out := l.must("builder", "prune", "-f"); !strings.Contains(out, "cache mount /cache") {
		t.Fatalf("builder prune:\n%s", out)
	}
	if dirs, _ := filepath.Glob(filepath.Join(l.dir, "images", "build-mounts", "*")); len(dirs) != 0 {
		t.Fatalf("cache mounts left after prune: %v", dirs)
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Fatalf("the builds left containers:\n%s", ps)
	}
}
