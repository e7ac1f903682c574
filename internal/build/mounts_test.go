package build

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/filelock"
)

// mountOf is the step's mount at target.
func mountOf(step RunStep, target string) (Mount, error) {
	for _, m := range step.Mounts {
		if m.Target == target {
			return m, nil
		}
	}
	return Mount{}, fmt.Errorf("no mount at %s in %+v", target, step.Mounts)
}

// RUN --mount as a step sees it while it runs: the context bound
// (without what .dockerignore excludes, read-only), a file of an earlier
// stage, a cache directory that keeps what a step wrote for the next
// build, a tmpfs, and a secret as a file (its mode and owner) and as an
// environment variable. The bound content is part of the step's cache
// key, the cache's content is not, and nothing of the step's mounts is
// left on the host but the cache.
func TestRunMounts(t *testing.T) {
	b, r := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{
		"src/main.go":   "package main\n",
		"go.mod":        "module m\n",
		"private.key":   "no\n",
		".dockerignore": "private.key\n",
		"Dockerfile": "FROM scratch AS first\n" +
			"RUN make-ran\n" +
			"FROM scratch\n" +
			"WORKDIR /w\n" +
			"RUN --mount=target=src --mount=type=bind,from=first,source=/ran,target=/from-first " +
			"--mount=type=cache,id=gocache,target=/root/.cache,uid=7,mode=0700 --mount=type=tmpfs,target=/scratch,size=1m " +
			"--mount=type=secret,id=tok,mode=0440,uid=5 --mount=type=secret,id=tok,env=TOKEN compile\n",
	})
	secretFile := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(secretFile, []byte("s3cret"), 0o600)
	runs := 0
	r.check = func(step RunStep) error {
		if !slices.Contains(step.Args, "compile") {
			return nil
		}
		runs++
		src, err := mountOf(step, "/w/src")
		if err != nil {
			return err
		}
		if b, err := os.ReadFile(filepath.Join(src.Source, "src/main.go")); err != nil || string(b) != "package main\n" || !src.ReadOnly {
			return fmt.Errorf("the context's bind: %q %v ro=%v", b, err, src.ReadOnly)
		}
		if _, err := os.Stat(filepath.Join(src.Source, "private.key")); err == nil {
			return fmt.Errorf("the bind holds what .dockerignore excludes")
		}
		ff, err := mountOf(step, "/from-first")
		if err != nil {
			return err
		}
		if b, _ := os.ReadFile(ff.Source); string(b) != "/bin/sh -c make-ran" {
			return fmt.Errorf("the stage's file: %q", b)
		}
		cache, err := mountOf(step, "/root/.cache")
		if err != nil {
			return err
		}
		fi, err := os.Stat(cache.Source)
		if err != nil || cache.ReadOnly || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 7 {
			return fmt.Errorf("the cache: %v %v", fi, err)
		}
		prev, _ := os.ReadFile(filepath.Join(cache.Source, "count"))
		os.WriteFile(filepath.Join(cache.Source, "count"), append(prev, 'x'), 0o644)
		if tm, err := mountOf(step, "/scratch"); err != nil || tm.Type != "tmpfs" || tm.Size != 1<<20 {
			return fmt.Errorf("the tmpfs: %+v %v", tm, err)
		}
		sec, err := mountOf(step, "/run/secrets/tok")
		if err != nil {
			return err
		}
		fi, err = os.Stat(sec.Source)
		if body, _ := os.ReadFile(sec.Source); err != nil || string(body) != "s3cret" || fi.Mode().Perm() != 0o440 || fi.Sys().(*syscall.Stat_t).Uid != 5 || !sec.ReadOnly {
			return fmt.Errorf("the secret's file: %q %v %v", body, fi, err)
		}
		if !slices.Equal(step.SecretEnv, []string{"TOKEN=s3cret"}) || slices.ContainsFunc(step.Env, func(e string) bool { return strings.Contains(e, "s3cret") }) {
			return fmt.Errorf("secret env %q, env %q", step.SecretEnv, step.Env)
		}
		return nil
	}
	build := func() string {
		t.Helper()
		var out bytes.Buffer
		_, err := b.Build(context.Background(), Options{Context: ctxDir, Tags: []string{"localhost/m:1"}, Out: &out,
			Secrets: map[string]Secret{"tok": {File: secretFile}}})
		if err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	build()
	if runs != 1 {
		t.Fatalf("the RUN with mounts ran %d times", runs)
	}
	// The same context again: the step is the cache's; a changed file
	// of the bind runs it again, and it finds what the first run left in
	// the cache.
	if out := build(); runs != 1 || strings.Count(out, "Using cache") != 3 {
		t.Fatalf("a build again ran the step (%d runs):\n%s", runs, out)
	}
	os.WriteFile(secretFile, []byte("s3cret"), 0o600) // a secret's content is no input
	// A bound file written again with the same bytes (a checkout) is no
	// change, whatever its time.
	writeFiles(t, ctxDir, map[string]string{"src/main.go": "package main\n"})
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(ctxDir, "src/main.go"), later, later)
	if build(); runs != 1 {
		t.Fatalf("the step ran again with its inputs unchanged")
	}
	writeFiles(t, ctxDir, map[string]string{"src/main.go": "package main // changed\n"})
	r.check = func(step RunStep) error {
		if !slices.Contains(step.Args, "compile") {
			return nil
		}
		runs++
		cache, err := mountOf(step, "/root/.cache")
		if err != nil {
			return err
		}
		if b, _ := os.ReadFile(filepath.Join(cache.Source, "count")); string(b) != "x" {
			return fmt.Errorf("the cache holds %q, want what the first build wrote", b)
		}
		return nil
	}
	build()
	if runs != 2 {
		t.Fatalf("a changed bound file did not run the step again (%d runs)", runs)
	}
	if left, _ := filepath.Glob(filepath.Join(b.Store.Dir, "tmp", "*")); len(left) > 0 {
		t.Errorf("build files left: %v", left)
	}

	// lodge builder prune: a cache in use stays; one not in use goes.
	caches, _ := filepath.Glob(filepath.Join(CacheMountsDir(b.Store.Dir), "*"))
	if len(caches) != 1 {
		t.Fatalf("cache directories: %v", caches)
	}
	held, err := filelock.SharedFile(context.Background(), filepath.Join(caches[0], "lock"), false)
	if err != nil {
		t.Fatal(err)
	}
	if gone, err := PruneCacheMounts(b.Store.Dir); err != nil || len(gone) != 0 {
		t.Fatalf("prune of a cache in use: %v %v", gone, err)
	}
	held.Close()
	gone, err := PruneCacheMounts(b.Store.Dir)
	if err != nil || len(gone) != 1 || gone[0].ID != "gocache" || gone[0].Size != 1 {
		t.Fatalf("prune: %+v %v", gone, err)
	}
	if _, err := os.Stat(caches[0]); !os.IsNotExist(err) {
		t.Fatalf("the cache is still there: %v", err)
	}
}

// A cache mount with sharing=private that another step holds gives the
// step an empty directory of its own, removed after it.
func TestPrivateCacheInUse(t *testing.T) {
	b, r := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM scratch\nRUN --mount=type=cache,target=/c,sharing=private work\n"})
	var seen string
	r.check = func(step RunStep) error {
		m, err := mountOf(step, "/c")
		seen = m.Source
		return err
	}
	if _, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard}); err != nil {
		t.Fatal(err)
	}
	shared := seen
	held, err := filelock.LockFile(context.Background(), filepath.Join(filepath.Dir(shared), "lock"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard, NoCache: true}); err != nil {
		t.Fatal(err)
	}
	if seen == shared || !strings.HasPrefix(seen, filepath.Join(b.Store.Dir, "tmp")) {
		t.Fatalf("a private cache in use was mounted from %s (the cache: %s)", seen, shared)
	}
	if _, err := os.Stat(seen); !os.IsNotExist(err) {
		t.Fatalf("the step's own cache is left: %v", err)
	}
}
