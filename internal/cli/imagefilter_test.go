package cli

import (
	"errors"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/lodgeruntime/lodge/internal/image"
)

// lodge images REPOSITORY[:TAG] and --filter as docker reads them.
func TestImageFilter(t *testing.T) {
	at := func(day int, labels map[string]string) *image.Image {
		im := &image.Image{}
		im.Config.Created = v1.Time{Time: time.Date(2026, 1, day, 0, 0, 0, 0, time.UTC)}
		im.Config.Config.Labels = labels
		return im
	}
	old, mid, new := at(1, nil), at(2, map[string]string{"tier": "web"}), at(3, map[string]string{"tier": "db"})
	find := func(n string) (*image.Image, error) {
		if n == "mid" {
			return mid, nil
		}
		return nil, errors.New("no such image")
	}
	type row struct {
		repo, tag string
		im        *image.Image
	}
	rows := []row{{"busybox", "latest", old}, {"127.0.0.1:5000/team/app", "v1", mid}, {"app", "v2", new}, {"<none>", "<none>", new}}
	for _, tc := range []struct {
		arg     string
		filters []string
		want    []string
	}{
		{"", nil, []string{"busybox:latest", "127.0.0.1:5000/team/app:v1", "app:v2", "<none>:<none>"}},
		{"app", nil, []string{"app:v2"}},
		{"127.0.0.1:5000/team/app", nil, []string{"127.0.0.1:5000/team/app:v1"}},
		{"", []string{"reference=*/*/app"}, []string{"127.0.0.1:5000/team/app:v1"}},
		{"app:v2", nil, []string{"app:v2"}},
		{"", []string{"reference=*box"}, []string{"busybox:latest"}},
		{"", []string{"reference=app:v*", "reference=busybox"}, []string{"busybox:latest", "app:v2"}},
		{"", []string{"dangling=true"}, []string{"<none>:<none>"}},
		{"", []string{"dangling=false", "label=tier"}, []string{"127.0.0.1:5000/team/app:v1", "app:v2"}},
		{"", []string{"label=tier=db"}, []string{"app:v2", "<none>:<none>"}},
		{"", []string{"before=mid"}, []string{"busybox:latest"}},
		{"", []string{"since=mid", "dangling=false"}, []string{"app:v2"}},
	} {
		f, err := parseImageFilter(tc.arg, tc.filters, find)
		if err != nil {
			t.Fatalf("%q %q: %v", tc.arg, tc.filters, err)
		}
		var got []string
		for _, r := range rows {
			if f.match(r.repo, r.tag, r.im) {
				got = append(got, r.repo+":"+r.tag)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q %q: %q, want %q", tc.arg, tc.filters, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%q %q: %q, want %q", tc.arg, tc.filters, got, tc.want)
				break
			}
		}
	}
	for _, bad := range []string{"dangling", "dangling=maybe", "size=1", "before=ghost", "reference=[x"} {
		if _, err := parseImageFilter("", []string{bad}, find); err == nil {
			t.Errorf("--filter %s accepted", bad)
		}
	}
}
