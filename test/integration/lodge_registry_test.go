package integration

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestLodgePushLogin: an image pulled from one registry, tagged and
// pushed to another that wants credentials (basic auth, on 127.0.0.1):
// refused before `lodge login`, which checks and stores them where docker
// does; the pushed image keeps its digest, pulls back and runs; `lodge
// logout` takes the credentials away.
func TestLodgePushLogin(t *testing.T) {
	l := newLodgeCLI(t)
	dockerCfg := t.TempDir()
	l.env = append(l.env, "DOCKER_CONFIG="+dockerCfg)
	ref, _ := testImage(t)
	l.must("pull", ref)

	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="lodge-test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(private.Close)
	host := strings.TrimPrefix(private.URL, "http://")
	target := host + "/mirror/app:v2"

	l.must("tag", ref, target)
	var insp []struct {
		ID          string `json:"Id"`
		RepoTags    []string
		RepoDigests []string
	}
	if err := json.Unmarshal([]byte(l.must("image", "inspect", target)), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("image inspect: %v %v", insp, err)
	}
	if !strings.Contains(strings.Join(insp[0].RepoTags, " "), target) || !strings.Contains(strings.Join(insp[0].RepoTags, " "), ref) {
		t.Errorf("RepoTags after tag: %v, want %s and %s", insp[0].RepoTags, ref, target)
	}
	if r := l.run("", "push", target); r.code == 0 || !strings.Contains(r.stderr, "lodge login "+host) {
		t.Errorf("push without credentials: exit %d, %s", r.code, r.stderr)
	}
	if r := l.run("wrong\n", "login", "-u", "alice", "--password-stdin", host); r.code == 0 || !strings.Contains(r.stderr, "refused") {
		t.Errorf("login with a wrong password: exit %d, %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dockerCfg, "config.json")); err == nil {
		b, _ := os.ReadFile(filepath.Join(dockerCfg, "config.json"))
		if strings.Contains(string(b), host) {
			t.Errorf("a refused login stored credentials: %s", b)
		}
	}
	if r := l.run("s3cret\n", "login", "-u", "alice", "--password-stdin", host); r.code != 0 || r.stdout != "Login Succeeded\n" {
		t.Fatalf("login: exit %d, %q %s", r.code, r.stdout, r.stderr)
	}
	out := l.must("push", target)
	if !strings.Contains(out, "digest: sha256:") {
		t.Errorf("push printed %q", out)
	}

	// What the registry has is the stored image, digest for digest.
	want := strings.TrimSpace(out[strings.Index(out, "sha256:"):])
	r, _ := name.ParseReference(target)
	desc, err := remote.Get(r, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	if err != nil {
		t.Fatalf("the pushed image is not in the registry: %v", err)
	}
	if desc.Digest.String() != want {
		t.Errorf("the registry's digest %s, the pushed %s", desc.Digest, want)
	}

	// Pulled back (credentials from login) into an empty store, it runs.
	l.must("rmi", target, ref)
	l.must("pull", target)
	if out := l.must("run", "--rm", target, "cat", "/marker"); out != "from the second layer\n" {
		t.Errorf("run of the image pulled back: %q", out)
	}
	if out := l.must("logout", host); !strings.Contains(out, "Removing login credentials for "+host) {
		t.Errorf("logout: %q", out)
	}
	if r := l.run("", "pull", target); r.code == 0 || !strings.Contains(r.stderr, "refused the credentials") {
		t.Errorf("pull after logout: exit %d, %s", r.code, r.stderr)
	}
	if out := l.must("logout", host); !strings.Contains(out, "Not logged in") {
		t.Errorf("a second logout: %q", out)
	}
}
