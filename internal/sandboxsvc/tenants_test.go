package sandboxsvc

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

const tokA, tokB = "token-of-alice-0123", "token-of-bob-456789"

// as sends a request with a tenant's token; out, if not nil, gets the
// JSON reply.
func (f *fixture) as(t *testing.T, token, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// TestTenants: each tenant sees, uses and removes only its own
// sandboxes (another's is 404, as one that does not exist), lists only
// its own, is held to its own limit, and has snapshots of its own names.
func TestTenants(t *testing.T) {
	t.Parallel()
	tenants, err := ParseTenants(strings.NewReader("# who shares the service\nalice " + tokA + " 1\n\nbob " + tokB + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Tenants: tenants})
	f.run.images = map[string]bool{}

	var a, b Sandbox
	if code := f.as(t, tokA, "POST", "/v1/sandboxes", CreateRequest{}, &a); code != 201 || a.Tenant != "alice" {
		t.Fatalf("alice's create: %d %+v", code, a)
	}
	if code := f.as(t, tokA, "POST", "/v1/sandboxes", CreateRequest{}, nil); code != 429 {
		t.Errorf("alice's second sandbox past her limit of 1: %d", code)
	}
	if code := f.as(t, tokB, "POST", "/v1/sandboxes", CreateRequest{}, &b); code != 201 {
		t.Fatalf("bob's create (alice's limit is hers): %d", code)
	}
	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/sandboxes/" + a.ID},
		{"DELETE", "/v1/sandboxes/" + a.ID},
		{"POST", "/v1/sandboxes/" + a.ID + "/timeout"},
		{"POST", "/v1/sandboxes/" + a.ID + "/commands"},
		{"GET", "/v1/sandboxes/" + a.ID + "/commands"},
		{"GET", "/v1/sandboxes/" + a.ID + "/files?path=/etc/passwd"},
		{"POST", "/v1/sandboxes/" + a.ID + "/snapshots"},
	} {
		var e map[string]string
		if code := f.as(t, tokB, req.method, req.path, map[string]any{}, &e); code != 404 || !strings.Contains(e["error"], "no such sandbox") {
			t.Errorf("bob: %s %s: %d %v, want 404 as for no sandbox", req.method, req.path, code, e)
		}
	}
	var la, lb []Sandbox
	f.as(t, tokA, "GET", "/v1/sandboxes", nil, &la)
	f.as(t, tokB, "GET", "/v1/sandboxes", nil, &lb)
	if len(la) != 1 || la[0].ID != a.ID || len(lb) != 1 || lb[0].ID != b.ID {
		t.Errorf("lists: alice %v, bob %v", la, lb)
	}
	if _, ok := f.run.ctrs[a.ID]; !ok {
		t.Fatal("bob's DELETE removed alice's sandbox")
	}

	// One snapshot name, two tenants: two snapshots.
	var sa, sb Snapshot
	f.as(t, tokA, "POST", "/v1/sandboxes/"+a.ID+"/snapshots", SnapshotRequest{Name: "base"}, &sa)
	f.as(t, tokB, "POST", "/v1/sandboxes/"+b.ID+"/snapshots", SnapshotRequest{Name: "base"}, &sb)
	if sa.Image == "" || sa.Image == sb.Image {
		t.Fatalf("snapshots of one name: alice %q, bob %q", sa.Image, sb.Image)
	}
	var snaps []Snapshot
	f.as(t, tokB, "GET", "/v1/snapshots", nil, &snaps)
	if len(snaps) != 1 || snaps[0].Image != sb.Image {
		t.Errorf("bob's snapshots: %v", snaps)
	}
	if code := f.as(t, tokB, "DELETE", "/v1/sandboxes/"+b.ID, nil, nil); code != 204 {
		t.Fatalf("bob removes his own: %d", code)
	}
	if code := f.as(t, tokB, "DELETE", "/v1/snapshots/base", nil, nil); code != 204 {
		t.Fatalf("bob removes his snapshot: %d", code)
	}
	f.as(t, tokA, "GET", "/v1/snapshots", nil, &snaps)
	if len(snaps) != 1 || snaps[0].Image != sa.Image {
		t.Errorf("alice's snapshots after bob removed his of that name: %v", snaps)
	}
	if code := f.as(t, "nobody-s-token-0000", "GET", "/v1/sandboxes", nil, nil); code != 401 {
		t.Errorf("an unknown token: %d", code)
	}
}

func TestParseTenantsRefuses(t *testing.T) {
	for name, file := range map[string]string{
		"short token":  "alice short",
		"same token":   "alice " + tokA + "\nbob " + tokA,
		"same name":    "alice " + tokA + "\nalice " + tokB,
		"bad name":     "Alice/x " + tokA,
		"bad limit":    "alice " + tokA + " 0",
		"extra fields": "alice " + tokA + " 1 2 3",
		"bad commands": "alice " + tokA + " - 0",
		"empty":        "# nobody\n",
	} {
		if _, err := ParseTenants(strings.NewReader(file)); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
}

// A tenant's MAX_COMMANDS bounds its own commands at once, whatever the
// service's --max-commands leaves; another tenant's run meanwhile.
func TestTenantCommandLimit(t *testing.T) {
	t.Parallel()
	tenants, err := ParseTenants(strings.NewReader("alice " + tokA + " - 1\nbob " + tokB + "\n"))
	if err != nil || tenants[0].MaxSandboxes != 0 || tenants[0].MaxCommands != 1 {
		t.Fatalf("%+v %v", tenants, err)
	}
	f := newFixture(t, Config{Tenants: tenants, MaxCommands: 8})
	f.run.images = map[string]bool{}
	var a, b Sandbox
	if code := f.as(t, tokA, "POST", "/v1/sandboxes", CreateRequest{}, &a); code != 201 {
		t.Fatalf("alice's create: %d", code)
	}
	if code := f.as(t, tokB, "POST", "/v1/sandboxes", CreateRequest{}, &b); code != 201 {
		t.Fatalf("bob's create: %d", code)
	}
	started, release := make(chan struct{}, 1), make(chan struct{})
	f.run.exec = func(name string, _ ExecArgs) int {
		if name == a.ID {
			started <- struct{}{}
			<-release
		}
		return 0
	}
	done := make(chan int)
	go func() {
		done <- f.as(t, tokA, "POST", "/v1/sandboxes/"+a.ID+"/commands", CommandRequest{Cmd: "sleep 1"}, nil)
	}()
	<-started
	var e map[string]string
	if code := f.as(t, tokA, "POST", "/v1/sandboxes/"+a.ID+"/commands", CommandRequest{Cmd: "true"}, &e); code != 429 || !strings.Contains(e["error"], "tenant alice") {
		t.Errorf("alice's second command past her 1: %d %v", code, e)
	}
	if code := f.as(t, tokB, "POST", "/v1/sandboxes/"+b.ID+"/commands", CommandRequest{Cmd: "true"}, nil); code != 200 {
		t.Errorf("bob's command while alice's runs: %d", code)
	}
	close(release)
	if code := <-done; code != 200 {
		t.Errorf("alice's first command: %d", code)
	}
	if code := f.as(t, tokA, "POST", "/v1/sandboxes/"+a.ID+"/commands", CommandRequest{Cmd: "true"}, nil); code != 200 {
		t.Errorf("alice's command after hers ended: %d", code)
	}
}
