package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/compose"
	"github.com/lodgeruntime/lodge/internal/config"
)

// useJournal points the events journal at a file of the test's own (not
// in parallel: the path is the package's).
func useJournal(t *testing.T) {
	old, oldMax := eventsPath, eventsMax
	eventsPath = filepath.Join(t.TempDir(), "events.log")
	t.Cleanup(func() { eventsPath, eventsMax = old, oldMax })
}

// lodgeEvents runs `lodge events` with args and returns what it printed.
func lodgeEvents(t *testing.T, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, append([]string{"events"}, args...), Env{Out: &out, Err: &errb, LoadConfig: func() (config.Config, error) { return config.Default(), nil }})
	if code != 0 {
		return errb.String(), code
	}
	return out.String(), code
}

func TestEvents(t *testing.T) {
	useJournal(t)
	r := &ctrRecord{ID: strings.Repeat("ab", 32), Name: "web", Image: "busybox:latest", Labels: map[string]string{"tier": "front"}}
	r.emit("create")
	r.emit("start")
	r.emit("die", "exitCode", "3")
	emitImage("pull", "busybox:latest", "index.docker.io/library/busybox:latest")
	emit("network", "create", "n1", map[string]string{"name": "n1", "type": "bridge"})
	r.emit("health_status: healthy")
	until := time.Now().Add(time.Second).Format(time.RFC3339Nano)
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want []string // each line's "TYPE ACTION"
	}{
		{nil, []string{"container create", "container start", "container die", "image pull", "network create", "container health_status: healthy"}},
		{[]string{"-f", "type=container", "-f", "event=die"}, []string{"container die"}},
		{[]string{"-f", "event=start", "-f", "event=create"}, []string{"container create", "container start", "network create"}},
		{[]string{"-f", "event=health_status"}, []string{"container health_status: healthy"}},
		{[]string{"-f", "container=web", "-f", "event=die"}, []string{"container die"}},
		{[]string{"-f", "container=abab", "-f", "event=die"}, []string{"container die"}},
		{[]string{"-f", "container=other"}, nil},
		{[]string{"-f", "label=tier=front", "-f", "event=start"}, []string{"container start"}},
		{[]string{"-f", "label=tier=back"}, nil},
		{[]string{"-f", "label=tier=front", "-f", "label=tier"}, []string{"container create", "container start", "container die", "container health_status: healthy"}},
		{[]string{"-f", "label=tier=front", "-f", "label=zone"}, nil}, // every label must hold
		{[]string{"-f", "image=busybox", "-f", "event=pull"}, []string{"image pull"}},
		{[]string{"-f", "network=n1"}, []string{"network create"}},
	} {
		out, code := lodgeEvents(t, ctx, append([]string{"--since", "1m", "--until", until, "--format", "{{.Type}} {{.Action}}"}, tc.args...)...)
		got := strings.Split(strings.TrimSpace(out), "\n")
		if out == "" {
			got = nil
		}
		if code != 0 || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("events %v: %d %q, want %q", tc.args, code, got, tc.want)
		}
	}
	// docker's JSON, and docker's line.
	out, _ := lodgeEvents(t, ctx, "--since", "1m", "--until", until, "--format", "json", "-f", "event=die")
	var e event
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Status != "die" || e.ID != r.ID || e.From != "busybox:latest" || e.Actor.Attributes["exitCode"] != "3" ||
		e.Actor.Attributes["name"] != "web" || e.Type != "container" || e.Scope != "local" || e.TimeNano == 0 {
		t.Errorf("json: %q %v", out, err)
	}
	out, _ = lodgeEvents(t, ctx, "--since", "1m", "--until", until, "-f", "event=die")
	if want := " container die " + r.ID + " (exitCode=3, image=busybox:latest, name=web, tier=front)\n"; !strings.HasSuffix(out, want) || !strings.HasPrefix(out, time.Now().UTC().Format("2006-01-02T")) {
		t.Errorf("docker's line: %q, want ...%q", out, want)
	}
	if out, code := lodgeEvents(t, ctx, "-f", "colour=red"); code == 0 || !strings.Contains(out, "KEY one of") {
		t.Errorf("a filter lodge does not know: %d %q", code, out)
	}
	// --until in the past: what was, then the end.
	if out, _ := lodgeEvents(t, ctx, "--since", "1m", "--until", "0s", "-f", "event=create", "-f", "type=container", "--format", "{{.Action}}"); out != "create\n" {
		t.Errorf("--until now: %q", out)
	}
}

// TestEventsFollow: without --since, only what comes; the journal is
// followed across a rotation.
func TestEventsFollow(t *testing.T) {
	useJournal(t)
	eventsMax = 2048
	emit("volume", "create", "before", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan string)
	go func() {
		out, _ := lodgeEvents(t, ctx, "--format", "{{.Actor.ID}}", "-f", "type=volume")
		done <- out
	}()
	time.Sleep(500 * time.Millisecond) // it is following
	var want []string
	for i := range 40 { // ~6 KiB: rotated twice
		id := fmt.Sprintf("v%d", i)
		emit("volume", "create", id, map[string]string{"driver": "local"})
		want = append(want, id)
		if i%10 == 0 {
			time.Sleep(300 * time.Millisecond)
		}
	}
	if _, err := os.Stat(eventsPath + ".1"); err != nil {
		t.Errorf("the journal was not rotated: %v", err)
	}
	time.Sleep(time.Second)
	cancel()
	out := <-done
	if got := strings.Fields(out); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("followed: %v\nwant %v", got, want)
	}
}

func TestComposeWants(t *testing.T) {
	t.Parallel()
	ctr := func(project, service string) event {
		return event{Type: "container", Actor: eventActor{Attributes: map[string]string{compose.LabelProject: project, compose.LabelService: service}}}
	}
	for _, tc := range []struct {
		e        event
		services []string
		want     bool
	}{
		{ctr("shop", "web"), nil, true},
		{ctr("shop", "web"), []string{"db", "web"}, true},
		{ctr("shop", "web"), []string{"db"}, false},
		{ctr("other", "web"), nil, false},
		{event{Type: "network", Actor: eventActor{Attributes: map[string]string{compose.LabelProject: "shop"}}}, nil, false},
	} {
		if _, got := composeWants(tc.e, "shop", tc.services); got != tc.want {
			t.Errorf("%+v for services %v: %v, want %v", tc.e, tc.services, got, tc.want)
		}
	}
}
