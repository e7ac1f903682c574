package sandboxsvc

import (
	"net/http"
	"strings"
	"testing"
)

// A sandbox's files kept as a snapshot start new sandboxes (past the
// image allow-list, which its image was on); a snapshot in use is not
// removed; names, counts and unknown snapshots are refused with the
// status that says why.
func TestSnapshots(t *testing.T) {
	f := newFixture(t, Config{Images: []string{"busybox"}, MaxSnapshots: 1})
	var sb Sandbox
	if code := f.call(t, "POST", "/v1/sandboxes", map[string]any{}, &sb); code != http.StatusCreated {
		t.Fatalf("create: %d", code)
	}
	var snap Snapshot
	if code := f.call(t, "POST", "/v1/sandboxes/"+sb.ID+"/snapshots", SnapshotRequest{Name: "prepared"}, &snap); code != http.StatusCreated ||
		snap.Name != "prepared" || snap.From != sb.ID || !strings.HasPrefix(snap.Image, "localhost/lodge-sandbox-"+f.svc.owner+"/") {
		t.Fatalf("snapshot: %d %+v", code, snap)
	}
	var list []Snapshot
	if f.call(t, "GET", "/v1/snapshots", nil, &list); len(list) != 1 || list[0].Name != "prepared" {
		t.Fatalf("snapshots %+v", list)
	}
	var from Sandbox
	if code := f.call(t, "POST", "/v1/sandboxes", map[string]any{"snapshot": "prepared"}, &from); code != http.StatusCreated || from.Image != snap.Image {
		t.Fatalf("create from the snapshot: %d %+v", code, from)
	}
	if c := f.run.created[len(f.run.created)-1]; c.Image != snap.Image || c.Pull {
		t.Fatalf("the runner made %+v, want the snapshot's image and no pull", c)
	}
	for name, tc := range map[string]struct {
		method, path string
		body         any
		want         int
	}{
		"unknown snapshot":      {"POST", "/v1/sandboxes", map[string]any{"snapshot": "nope"}, http.StatusNotFound},
		"image and snapshot":    {"POST", "/v1/sandboxes", map[string]any{"snapshot": "prepared", "image": "busybox"}, http.StatusBadRequest},
		"bad name":              {"POST", "/v1/sandboxes/" + sb.ID + "/snapshots", SnapshotRequest{Name: "../x"}, http.StatusBadRequest},
		"no name":               {"POST", "/v1/sandboxes/" + sb.ID + "/snapshots", SnapshotRequest{}, http.StatusBadRequest},
		"unknown sandbox":       {"POST", "/v1/sandboxes/sbx-000000000000/snapshots", SnapshotRequest{Name: "x"}, http.StatusNotFound},
		"past the limit":        {"POST", "/v1/sandboxes/" + sb.ID + "/snapshots", SnapshotRequest{Name: "second"}, http.StatusTooManyRequests},
		"replace one in use":    {"POST", "/v1/sandboxes/" + sb.ID + "/snapshots", SnapshotRequest{Name: "prepared"}, http.StatusConflict},
		"remove one in use":     {"DELETE", "/v1/snapshots/prepared", nil, http.StatusConflict},
		"remove an unknown one": {"DELETE", "/v1/snapshots/nope", nil, http.StatusNotFound},
	} {
		var e map[string]string
		if code := f.call(t, tc.method, tc.path, tc.body, &e); code != tc.want || e["error"] == "" {
			t.Errorf("%s: %d %v, want %d with an error", name, code, e, tc.want)
		}
	}
	if code := f.call(t, "DELETE", "/v1/sandboxes/"+from.ID, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if code := f.call(t, "DELETE", "/v1/snapshots/prepared", nil, nil); code != http.StatusNoContent {
		t.Fatalf("remove the snapshot: %d", code)
	}
	if f.call(t, "GET", "/v1/snapshots", nil, &list); len(list) != 0 {
		t.Fatalf("snapshots after removal: %+v", list)
	}
}
