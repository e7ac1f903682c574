package sandboxsvc

// Tenants: a service that several callers share gives each a token of its
// own (serve --tenants-file). A request is its token's tenant's: it sees,
// runs commands in, reads, snapshots and removes only that tenant's
// sandboxes (another's are "no such sandbox", never "forbidden", so a
// caller learns nothing of the others' IDs), lists only its own, makes
// at most its own number of them, and names snapshots in a namespace of
// its own. With one --token (or none, on the unix socket) every request
// is the one tenant "".

import (
	"bufio"
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Tenant is one caller of a shared service.
type Tenant struct {
	Name  string
	Token string
	// MaxSandboxes is how many of its sandboxes may be alive at once
	// (0: only the service's own limit).
	MaxSandboxes int
	// MaxCommands is how many commands (file calls and snapshots
	// included) its sandboxes may run at once (0: only the service's
	// --max-commands), so that one tenant cannot take every place.
	MaxCommands int
}

var tenantName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ParseTenants reads a tenants file: one tenant per line, NAME TOKEN
// [MAX_SANDBOXES [MAX_COMMANDS]] ("-": no limit of its own), blank lines
// and lines starting with # skipped.
func ParseTenants(r io.Reader) ([]Tenant, error) {
	var out []Tenant
	names, tokens := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 2 || len(f) > 4 {
			return nil, fmt.Errorf("tenants, line %d: want NAME TOKEN [MAX_SANDBOXES [MAX_COMMANDS]]", n)
		}
		t := Tenant{Name: f[0], Token: f[1]}
		switch {
		case !tenantName.MatchString(t.Name):
			return nil, fmt.Errorf("tenants, line %d: name %q: want 1 to 32 of a-z 0-9 - (a letter or digit first)", n, t.Name)
		case len(t.Token) < 16:
			return nil, fmt.Errorf("tenants, line %d: %s's token must be at least 16 characters", n, t.Name)
		case names[t.Name]:
			return nil, fmt.Errorf("tenants, line %d: %s is named twice", n, t.Name)
		case tokens[t.Token]:
			return nil, fmt.Errorf("tenants, line %d: %s's token is another tenant's", n, t.Name)
		}
		for i, limit := range []*int{&t.MaxSandboxes, &t.MaxCommands} {
			if len(f) <= 2+i || f[2+i] == "-" {
				continue
			}
			m, err := strconv.Atoi(f[2+i])
			if err != nil || m < 1 {
				return nil, fmt.Errorf("tenants, line %d: %s %q: want a positive number, or -", n, []string{"MAX_SANDBOXES", "MAX_COMMANDS"}[i], f[2+i])
			}
			*limit = m
		}
		names[t.Name], tokens[t.Token] = true, true
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tenants: no tenant in the file")
	}
	return out, nil
}

type tenantKey struct{}

// tenantOf is the tenant a request's context belongs to.
func tenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// WithTenant is ctx acting for tenant (what the HTTP layer does for each
// request; for callers of the service's methods).
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// hasTokens says whether requests must bring a token.
func (s *Service) hasTokens() bool { return s.cfg.Token != "" || len(s.cfg.Tenants) > 0 }

// tenantOfRequest is the tenant whose token the request brings, in
// TokenHeader or else in Authorization.
func (s *Service) tenantOfRequest(r *http.Request) (Tenant, bool) {
	if t := r.Header.Get(TokenHeader); t != "" {
		return s.tenantFor("Bearer " + t)
	}
	return s.tenantFor(r.Header.Get("Authorization"))
}

// tenantFor is the tenant whose token an Authorization header carries;
// every token is compared, in constant time, whatever matches.
func (s *Service) tenantFor(header string) (Tenant, bool) {
	var found Tenant
	ok := false
	if s.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(header), []byte("Bearer "+s.cfg.Token)) == 1 {
		found, ok = Tenant{}, true
	}
	for _, t := range s.cfg.Tenants {
		if subtle.ConstantTimeCompare([]byte(header), []byte("Bearer "+t.Token)) == 1 {
			found, ok = t, true
		}
	}
	return found, ok
}

// owns says whether sandbox id is tenant's, or unknown (the request then
// gets its own "no such sandbox").
func (s *Service) owns(tenant, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb, ok := s.boxes[id]
	return !ok || sb.Tenant == tenant
}

// tenantLimit is the tenant's own limit on sandboxes (0: none).
func (s *Service) tenantLimit(tenant string) int {
	return s.tenant(tenant).MaxSandboxes
}

// tenant is the tenant of that name (none: no limits of its own).
func (s *Service) tenant(name string) Tenant {
	for _, t := range s.cfg.Tenants {
		if t.Name == name {
			return t
		}
	}
	return Tenant{Name: name}
}
