package cli

import (
	"slices"
	"testing"
)

func TestParseForwards(t *testing.T) {
	t.Parallel()
	got, err := parseForwards([]string{"8080", "9000:80", ":443", "0:22"})
	want := []forward{{8080, 8080}, {9000, 80}, {0, 443}, {0, 22}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("parseForwards = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{"", "0", "x", "80:", "65536", "1:2:3", "-1:80", "80:0"} {
		if f, err := parseForwards([]string{bad}); err == nil {
			t.Errorf("parseForwards(%q) = %v, want an error", bad, f)
		}
	}
}
