package build

// ADD of a git repository: https://HOST/REPO.git#REF:SUBDIR (http:// and
// git:// too), cloned on the host with git, as BuildKit's ADD does.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/buildkit/util/gitutil"
)

// gitSource reports whether an ADD source is a git repository, as
// BuildKit tells one: git://, ssh, or an http(s) URL whose path ends in
// .git, with an optional #REF[:SUBDIR].
func gitSource(src string) (*gitutil.GitRef, bool) {
	r, err := gitutil.ParseGitRef(src)
	if err != nil || r.IndistinguishableFromLocal {
		return nil, false
	}
	return r, true
}

// gitEnv is git's whole environment: no prompt for credentials, no
// configuration of the host's (system, root's) beside what each call says.
func gitEnv(home string) []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_ASKPASS=/bin/false", "LC_ALL=C"}
}

// gitArgs come first in every git call: only network transports (a
// repository's submodules cannot name the host's own files), no hooks.
var gitArgs = []string{"-c", "protocol.allow=never", "-c", "protocol.https.allow=always",
	"-c", "protocol.http.allow=always", "-c", "protocol.git.allow=always",
	"-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false"}

// git runs git in dir; a failure carries git's last words.
func git(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", append(append([]string{}, gitArgs...), args...)...)
	cmd.Dir, cmd.Env = dir, gitEnv(dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New("ADD of a git repository needs git on the host (apt-get install git)")
		}
		words := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(words, "\n"); i >= 0 {
			words = words[i+1:]
		}
		return fmt.Errorf("git %s: %s", args[0], words)
	}
	return nil
}

// cloneGit checks r out into a new directory below tmp and returns it,
// without .git unless keepGitDir. A branch or tag comes with a shallow
// clone where the server can give one; a commit, or a server that cannot
// (git's "dumb" HTTP), takes the whole history.
func cloneGit(ctx context.Context, r *gitutil.GitRef, tmp string, keepGitDir bool) (string, error) {
	if !strings.Contains(r.Remote, "://") {
		return "", fmt.Errorf("%s: ADD of a git repository over SSH is not supported (the host's keys are not a build's to use): give an https:// URL", r.Remote)
	}
	dir, err := os.MkdirTemp(tmp, "git-")
	if err != nil {
		return "", err
	}
	repo := filepath.Join(dir, "repo")
	shallow := []string{"clone", "-q", "--no-checkout", "--depth", "1"}
	if r.Commit != "" {
		shallow = append(shallow, "--branch", r.Commit)
	}
	if err := git(ctx, dir, append(shallow, "--", r.Remote, repo)...); err != nil {
		os.RemoveAll(repo)
		if err := git(ctx, dir, "clone", "-q", "--no-checkout", "--", r.Remote, repo); err != nil {
			return "", err
		}
	}
	ref := "HEAD"
	if r.Commit != "" {
		ref = r.Commit
		for _, c := range []string{r.Commit, "origin/" + r.Commit, "refs/tags/" + r.Commit} {
			if git(ctx, repo, "rev-parse", "--verify", "--quiet", c+"^{commit}") == nil {
				ref = c
				break
			}
		}
	}
	if err := git(ctx, repo, "checkout", "-q", "--detach", ref, "--"); err != nil {
		return "", fmt.Errorf("%s#%s: %w", r.Remote, r.Commit, err)
	}
	if _, err := os.Stat(filepath.Join(repo, ".gitmodules")); err == nil {
		if err := git(ctx, repo, "submodule", "update", "-q", "--init", "--recursive"); err != nil {
			return "", err
		}
	}
	if !keepGitDir {
		if err := os.RemoveAll(filepath.Join(repo, ".git")); err != nil {
			return "", err
		}
	}
	return repo, nil
}

// addGit is ADD of a git repository: its files (its SUBDIR's, if r names
// one) at dst (a directory), as root's unless --chown, --exclude's
// patterns matched from the repository's root. The returned closer keeps
// the checkout readable until the layer is written.
func (bd *build) addGit(ctx context.Context, lb *layerBuilder, r *gitutil.GitRef, dst string, keepGitDir bool, o copyOpts) (io.Closer, error) {
	fmt.Fprintf(bd.o.Out, "Cloning %s\n", r.Remote)
	repo, err := cloneGit(ctx, r, bd.tmpDir, keepGitDir)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(repo)
	if err != nil {
		return nil, err
	}
	if sub := strings.Trim(path.Clean("/"+r.SubDir), "/"); sub != "" {
		// Through the checkout's root: a link cannot take it elsewhere.
		subRoot, err := root.OpenRoot(sub)
		root.Close()
		if err != nil {
			return nil, fmt.Errorf("%s#%s:%s: no such directory in the repository", r.Remote, r.Commit, r.SubDir)
		}
		root = subRoot
	}
	o.fromStage, o.skip, o.excludeRoot = false, nil, "/" // .dockerignore is the context's
	if err := lb.copyTree(contextSource{root}, "/", dst, o); err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}
