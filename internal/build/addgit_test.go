package build

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/erofs/go-erofs"
)

// gitRepo makes a repository served over git's "dumb" HTTP from
// 127.0.0.1 (no shallow clones there: the clone falls back to a whole
// one): v1 (a tag) has a.txt "one" and sub/b.txt; main then has a.txt
// "two" and a link to /etc; branch feature adds sub/c.txt. It returns the URL and v1's
// commit.
func gitRepo(t *testing.T) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git (make deps installs it)")
	}
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir, cmd.Env = dir, gitEnv(dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q")
	writeFiles(t, dir, map[string]string{"a.txt": "one", "sub/b.txt": "b1"})
	run("add", ".")
	run("commit", "-q", "-m", "one")
	run("tag", "v1")
	v1 := run("rev-parse", "HEAD")
	writeFiles(t, dir, map[string]string{"a.txt": "two"})
	if err := os.Symlink("/etc", filepath.Join(dir, "out")); err != nil { // a SUBDIR must not lead off the checkout
		t.Fatal(err)
	}
	run("add", ".")
	run("commit", "-q", "-m", "two")
	run("checkout", "-q", "-b", "feature")
	writeFiles(t, dir, map[string]string{"sub/c.txt": "c"})
	run("add", ".")
	run("commit", "-q", "-m", "c")
	run("checkout", "-q", "main")
	run("update-server-info")
	srv := httptest.NewServer(http.StripPrefix("/repo.git/", http.FileServer(http.Dir(filepath.Join(dir, ".git")))))
	t.Cleanup(srv.Close)
	return srv.URL + "/repo.git", v1
}

// ADD of a git repository, as BuildKit's: a tag, the default branch, a
// branch's subdirectory, a commit, --keep-git-dir and --exclude.
func TestAddGit(t *testing.T) {
	repo, v1 := gitRepo(t)
	b, _ := newTestBuilder(t)
	ctxDir := t.TempDir()
	writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM scratch\n" +
		"ADD " + repo + "#v1 /v1/\n" +
		"ADD " + repo + " /head\n" +
		"ADD " + repo + "#feature:sub /sub/\n" +
		"ADD --keep-git-dir=true " + repo + "#v1 /kept/\n" +
		"ADD " + repo + "#" + v1 + " /sha/\n" +
		"ADD --exclude=sub " + repo + " /ex/\n" +
		"ADD --chown=1234:1234 " + repo + "#v1 /owned/\n",
	})
	im, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	u := imageFiles(t, b, im)
	present(t, u, map[string]string{
		"/v1/a.txt": "one", "/v1/sub/b.txt": "b1", "/head/a.txt": "two", "/head/sub/b.txt": "b1",
		"/sub/b.txt": "b1", "/sub/c.txt": "c", "/kept/a.txt": "one", "/sha/a.txt": "one", "/ex/a.txt": "two",
	}, []string{"/v1/.git", "/head/.git", "/head/sub/c.txt", "/sub/a.txt", "/v1/sub/c.txt", "/ex/sub"})
	if !u.IsDir("/kept/.git") {
		t.Error("ADD --keep-git-dir=true kept no .git")
	}
	// Root's, or --chown's.
	for p, want := range map[string]uint32{"/v1/a.txt": 0, "/owned/a.txt": 1234, "/owned/sub": 1234} {
		fi, _, err := u.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := fi.Sys().(*erofs.Stat); !ok || st.UID != want || st.GID != want {
			t.Errorf("%s: owner %+v, want %d", p, fi.Sys(), want)
		}
	}

	for _, tc := range []struct{ line, want string }{
		{"ADD " + repo + "#nosuch /x/", "nosuch"},
		{"COPY " + repo + " /x/", "cannot be a git repository"},
		{"ADD git@example.com:x/y.git /x/", "over SSH is not supported"},
		{"ADD " + repo + "#v1:nosuch /x/", "no such directory"},
		{"ADD " + repo + "#main:out /x/", "no such directory"},
		{"ADD http://127.0.0.1:1/none.git /x/", "git clone"},
	} {
		os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte("FROM scratch\n"+tc.line+"\n"), 0o644)
		if _, err := b.Build(context.Background(), Options{Context: ctxDir, Out: io.Discard}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.line, err, tc.want)
		}
	}
}
