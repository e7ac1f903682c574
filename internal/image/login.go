package image

import (
	"context"
	"fmt"
	"net/http"

	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Credentials live where docker keeps them (~/.docker/config.json, or
// $DOCKER_CONFIG, or a credential helper that file names), so docker,
// podman's fallback and go-containerregistry's keychain read what `lodge
// login` writes, and the other way round.

// authKey is the key docker files a registry's credentials under.
func authKey(reg name.Registry) string {
	if reg.RegistryStr() == name.DefaultRegistry {
		return "https://index.docker.io/v1/"
	}
	return reg.RegistryStr()
}

// Login checks user and password against the registry (its /v2/
// endpoint, through its token service where it has one) and, if it takes
// them, stores them as docker does. It returns where.
func Login(ctx context.Context, registry, user, password string) (string, error) {
	reg, err := name.NewRegistry(registry)
	if err != nil {
		return "", fmt.Errorf("login: %q is not a registry: %w", registry, err)
	}
	auth := authn.FromConfig(authn.AuthConfig{Username: user, Password: password})
	rt, err := transport.NewWithContext(ctx, reg, auth, remote.DefaultTransport, []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return "", registryError("login", reg, reg, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return "", fmt.Errorf("login %s: cannot reach the registry: %w", reg, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return "", fmt.Errorf("login %s: the registry refused the user name or password (%s)", reg, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("login %s: the registry answered %s", reg, resp.Status)
	}
	cf, err := dockerconfig.Load(dockerconfig.Dir())
	if err != nil {
		return "", fmt.Errorf("login %s: %w", reg, err)
	}
	key := authKey(reg)
	if err := cf.GetCredentialsStore(key).Store(types.AuthConfig{Username: user, Password: password, ServerAddress: key}); err != nil {
		return "", fmt.Errorf("login %s: store the credentials: %w", reg, err)
	}
	return cf.GetFilename(), nil
}

// Logout removes the credentials stored for the registry; it says
// whether there were any.
func Logout(registry string) (bool, error) {
	reg, err := name.NewRegistry(registry)
	if err != nil {
		return false, fmt.Errorf("logout: %q is not a registry: %w", registry, err)
	}
	cf, err := dockerconfig.Load(dockerconfig.Dir())
	if err != nil {
		return false, fmt.Errorf("logout %s: %w", reg, err)
	}
	key := authKey(reg)
	store := cf.GetCredentialsStore(key)
	if ac, err := store.Get(key); err != nil || ac.Username == "" && ac.Password == "" && ac.IdentityToken == "" {
		return false, nil
	}
	if err := store.Erase(key); err != nil {
		return false, fmt.Errorf("logout %s: %w", reg, err)
	}
	return true, nil
}
