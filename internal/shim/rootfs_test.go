package shim

import (
	"slices"
	"testing"

	apitypes "github.com/containerd/containerd/api/types"
)

func TestOverlayLowers(t *testing.T) {
	ov := func(opts ...string) []*apitypes.Mount {
		return []*apitypes.Mount{{Type: "overlay", Source: "overlay", Options: opts}}
	}
	for _, tc := range []struct {
		name   string
		mounts []*apitypes.Mount
		want   []string
	}{
		{"active snapshot", ov("index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"), []string{"/s/2/fs", "/s/1/fs"}},
		{"one parent", ov("workdir=/s/2/work", "upperdir=/s/2/fs", "lowerdir=/s/1/fs"), []string{"/s/1/fs"}},
		{"read-only view", ov("lowerdir=/s/2/fs:/s/1/fs"), []string{"/s/2/fs", "/s/1/fs"}},
		{"no parents (bind)", []*apitypes.Mount{{Type: "bind", Source: "/s/1/fs", Options: []string{"rbind", "rw"}}}, nil},
		{"relative lower", ov("lowerdir=s/1/fs"), nil},
		{"no lowerdir", ov("upperdir=/s/1/fs"), nil},
		{"two mounts", append(ov("lowerdir=/a"), ov("lowerdir=/b")...), nil},
		{"none", nil, nil},
	} {
		got, ok := overlayLowers(tc.mounts)
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: overlayLowers = %v, %v; want %v", tc.name, got, ok, tc.want)
		}
	}
}
