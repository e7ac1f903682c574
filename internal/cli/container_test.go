package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestCtrFilters(t *testing.T) {
	t.Parallel()
	code := 3
	r := &ctrRecord{ID: "abcdef0123", Name: "web-1", Image: "index.docker.io/library/busybox:latest", ImageID: "feedbeef99001122", ExitCode: &code,
		Labels: map[string]string{"tier": "web", "empty": ""}}
	for _, tc := range []struct {
		filters []string
		st      string
		want    bool
	}{
		{nil, "running", true},
		{[]string{"name=web"}, "running", true},
		{[]string{"name=db"}, "running", false},
		{[]string{"name=db", "name=web"}, "running", true}, // one key: either
		{[]string{"name=web", "status=exited"}, "running", false},
		{[]string{"status=exited", "status=running"}, "running", true},
		{[]string{"id=abcd"}, "exited", true},
		{[]string{"id=bcd"}, "exited", false},
		{[]string{"ancestor=busybox"}, "exited", true},
		{[]string{"ancestor=busybox:latest"}, "exited", true},
		{[]string{"ancestor=alpine"}, "exited", false},
		{[]string{"ancestor=feedbeef9900"}, "exited", true},
		{[]string{"exited=3"}, "exited", true},
		{[]string{"exited=3"}, "running", false},
		{[]string{"exited=0"}, "exited", false},
		{[]string{"label=tier"}, "running", true},
		{[]string{"label=tier=web"}, "running", true},
		{[]string{"label=tier=db"}, "running", false},
		{[]string{"label=empty="}, "running", true},
		{[]string{"label=owner"}, "running", false},
	} {
		f, err := parseFilters(tc.filters)
		if err != nil {
			t.Fatalf("%v: %v", tc.filters, err)
		}
		if got := f.match(r, tc.st); got != tc.want {
			t.Errorf("%v on a %s container: %v, want %v", tc.filters, tc.st, got, tc.want)
		}
	}
	for _, bad := range []string{"name", "status=sleeping", "exited=x", "volume=a"} {
		if _, err := parseFilters([]string{bad}); err == nil {
			t.Errorf("--filter %q: no error", bad)
		}
	}
}

func TestParseLogTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"10m":                       now.Add(-10 * time.Minute),
		"2026-12-06T10:00:00Z":      time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC),
		"2026-12-06T10:00:00+01:00": time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC),
		"2026-12-05":                time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC),
		"1796558400":                time.Unix(1796558400, 0),
		"1796558400.5":              time.Unix(1796558400, 5e8),
	} {
		got, err := parseLogTime("since", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseLogTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseLogTime("since", "yesterday", now); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("parseLogTime(yesterday): %v", err)
	}
}

func TestPrintInspectFormat(t *testing.T) {
	t.Parallel()
	objs := []any{
		map[string]any{"Id": "a1", "State": map[string]any{"Status": "running"}, "Args": []string{"-c", "x"}},
		map[string]any{"Id": "b2", "State": map[string]any{"Status": "exited"}, "Args": []string{}},
	}
	var out bytes.Buffer
	if err := printInspect(&out, objs, `{{.Id}} {{.State.Status}} {{json .Args}} {{upper .State.Status}} {{.Missing}}`); err != nil {
		t.Fatal(err)
	}
	if want := "a1 running [\"-c\",\"x\"] RUNNING <no value>\nb2 exited [] EXITED <no value>\n"; out.String() != want {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	out.Reset()
	if err := printInspect(&out, objs[:1], ""); err != nil || !strings.HasPrefix(out.String(), "[\n    {") {
		t.Errorf("no format: %q %v", out.String(), err)
	}
	if err := printInspect(&out, objs, "{{.Id"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("a bad template: %v", err)
	}
}
