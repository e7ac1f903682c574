package sandboxsvc

import (
	"slices"
	"strings"
	"testing"
)

// A bridged sandbox's allow_out and deny_out reach lodge run on the
// service's network, with the service's own deny set first; what cannot
// be enforced as asked is refused with the reason, and nothing is made.
func TestEgressLists(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{AllowNetwork: true, Network: "lodge-sandboxes", DenyOut: []string{"169.254.0.0/16", "10.0.0.0/8"}})
	sb := f.create(t, CreateRequest{Network: "bridge", AllowOut: []string{"192.0.2.7"}, DenyOut: []string{"0.0.0.0/0"}})
	got := f.run.created[len(f.run.created)-1]
	if got.Network != "lodge-sandboxes" || !slices.Equal(got.Egress.Allow, []string{"192.0.2.7"}) ||
		!slices.Equal(got.Egress.Deny, []string{"169.254.0.0/16", "10.0.0.0/8", "0.0.0.0/0"}) || got.Egress.Proxy != 0 {
		t.Errorf("lodge run got %+v", got)
	}
	if !slices.Equal(sb.AllowOut, []string{"192.0.2.7"}) || !slices.Equal(sb.DenyOut, []string{"0.0.0.0/0"}) || sb.Network != "bridge" {
		t.Errorf("the sandbox shows %+v", sb)
	}
	f.create(t, CreateRequest{Network: "bridge"})
	if got := f.run.created[len(f.run.created)-1]; !slices.Equal(got.Egress.Deny, []string{"169.254.0.0/16", "10.0.0.0/8"}) || got.Egress.Allow != nil {
		t.Errorf("a sandbox that asks nothing still gets the service's deny set: %+v", got)
	}
	f.create(t, CreateRequest{})
	if got := f.run.created[len(f.run.created)-1]; got.Network != "none" || got.Egress.Deny != nil {
		t.Errorf("a sandbox without a network: %+v", got)
	}
	n := len(f.run.created)
	for _, bad := range []struct {
		req  CreateRequest
		want string
	}{
		{CreateRequest{AllowOut: []string{"192.0.2.7"}}, "has no network"},
		{CreateRequest{Network: "bridge", AllowOut: []string{"10.1.2.3"}}, "overlaps 10.0.0.0/8"},
		{CreateRequest{Network: "bridge", AllowOut: []string{"0.0.0.0/0"}}, "overlaps 169.254.0.0/16"},
		{CreateRequest{Network: "bridge", DenyOut: []string{"pypi.org"}}, "names are not followed"},
		{CreateRequest{Network: "bridge", AllowOut: []string{"pypi.org"}}, "egress proxy"},
		{CreateRequest{Network: "bridge", DenyOut: []string{"2001:db8::/32"}}, "IPv4"},
		{CreateRequest{Network: "bridge", DenyOut: slices.Repeat([]string{"192.0.2.1"}, maxDests+1)}, "at most 64"},
	} {
		var e map[string]string
		if code := f.call(t, "POST", "/v1/sandboxes", bad.req, &e); code != 400 || !strings.Contains(e["error"], bad.want) {
			t.Errorf("%+v: %d %v, want 400 saying %q", bad.req, code, e, bad.want)
		}
	}
	if len(f.run.created) != n {
		t.Errorf("refused requests made %d containers", len(f.run.created)-n)
	}
	// Replaced while it runs; refused as at its making.
	var put Sandbox
	if code := f.call(t, "PUT", "/v1/sandboxes/"+sb.ID+"/network", map[string]any{"deny_out": []string{"198.51.100.0/24"}}, &put); code != 200 ||
		put.AllowOut != nil || !slices.Equal(put.DenyOut, []string{"198.51.100.0/24"}) {
		t.Errorf("PUT network: %d %+v", code, put)
	}
	if e := f.run.egress; len(e) != 1 || e[0].name != sb.ID || e[0].e.Allow != nil || !slices.Equal(e[0].e.Deny, []string{"169.254.0.0/16", "10.0.0.0/8", "198.51.100.0/24"}) {
		t.Errorf("lodge update got %v", e)
	}
	var again Sandbox
	if f.call(t, "GET", "/v1/sandboxes/"+sb.ID, nil, &again); !slices.Equal(again.DenyOut, []string{"198.51.100.0/24"}) {
		t.Errorf("the sandbox after PUT network: %+v", again)
	}
	var e map[string]string
	if code := f.call(t, "PUT", "/v1/sandboxes/"+sb.ID+"/network", map[string]any{"allow_out": []string{"10.9.9.9"}}, &e); code != 400 || !strings.Contains(e["error"], "overlaps") {
		t.Errorf("PUT network overlapping the service's deny set: %d %v", code, e)
	}
	none := f.create(t, CreateRequest{})
	if code := f.call(t, "PUT", "/v1/sandboxes/"+none.ID+"/network", map[string]any{"deny_out": []string{"0.0.0.0/0"}}, &e); code != 400 || !strings.Contains(e["error"], "no network") {
		t.Errorf("PUT network of a sandbox without one: %d %v", code, e)
	}
	if len(f.run.egress) != 1 {
		t.Errorf("refused updates reached lodge: %v", f.run.egress)
	}
	if _, err := New(Config{Dir: t.TempDir(), DenyOut: []string{"nope"}}, f.run, nil); err == nil || !strings.Contains(err.Error(), "--deny-out") {
		t.Errorf("a service with a bad --deny-out: %v", err)
	}
}
