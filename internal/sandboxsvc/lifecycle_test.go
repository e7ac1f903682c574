package sandboxsvc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// follow GETs path (an events stream) with token ("": none) and returns
// its events as "TYPE SANDBOX WHY" lines, as they come, until the test
// ends.
func (f *fixture) follow(t *testing.T, token, path string) <-chan string {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	out := make(chan string, 100)
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var e LifecycleEvent
			json.Unmarshal(sc.Bytes(), &e)
			out <- strings.TrimSpace(fmt.Sprintf("%s %s %s%s", e.Type, e.SandboxID, e.Why, e.Error))
		}
		close(out)
	}()
	return out
}

// next is the next n events from c, or what came in 5 s.
func next(c <-chan string, n int) []string {
	var got []string
	for len(got) < n {
		select {
		case e, ok := <-c:
			if !ok {
				return got
			}
			got = append(got, e)
		case <-time.After(5 * time.Second):
			return got
		}
	}
	return got
}

// TestLifecycleEvents: a follower sees each step of a sandbox's life as it
// happens, a reconnecting one what it missed with replay, and a tenant
// only its own sandboxes'.
func TestLifecycleEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxPaused: time.Hour})
	now := time.Now()
	f.svc.now = func() time.Time { return now }
	all := f.follow(t, "", "/v1/events")
	a := f.create(t, CreateRequest{TimeoutSeconds: 100, Metadata: map[string]string{"job": "7"}})
	b := f.create(t, CreateRequest{TimeoutSeconds: 10})
	one := f.follow(t, "", "/v1/events?sandbox="+a.ID)
	f.call(t, "POST", "/v1/sandboxes/"+a.ID+"/timeout", map[string]int{"timeout_seconds": 50}, nil)
	f.call(t, "POST", "/v1/sandboxes/"+a.ID+"/pause", nil, nil)
	f.call(t, "POST", "/v1/sandboxes/"+a.ID+"/resume", nil, nil)
	now = now.Add(11 * time.Second)
	f.svc.reapOnce(context.Background())
	f.call(t, "DELETE", "/v1/sandboxes/"+a.ID, nil, nil)
	want := []string{"created " + a.ID, "created " + b.ID, "updated " + a.ID + " timeout", "paused " + a.ID + " paused",
		"resumed " + a.ID + " resumed", "removed " + b.ID + " expired", "removed " + a.ID + " removed"}
	if got := next(all, len(want)); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("followed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got, want := next(one, 5), []string{want[2], want[3], want[4], want[6]}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("followed for %s alone: %q, want %q", a.ID, got, want)
	}
	// What was kept, for one that comes later.
	if got := next(f.follow(t, "", "/v1/events?replay=true"), len(want)); len(got) != len(want) || got[0] != want[0] {
		t.Errorf("replayed: %q", got)
	}
	var e map[string]string
	if code := f.call(t, "GET", "/v1/events?sandbox=sbx-0123456789ab", nil, &e); code != 404 {
		t.Errorf("events of no sandbox: %d %v", code, e)
	}
}

// TestLifecycleEventsTenants: a tenant follows its own sandboxes alone.
func TestLifecycleEventsTenants(t *testing.T) {
	t.Parallel()
	tenants, err := ParseTenants(strings.NewReader("alice " + tokA + "\nbob " + tokB + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Tenants: tenants})
	alice := f.follow(t, tokA, "/v1/events")
	var mine, theirs Sandbox
	f.as(t, tokB, "POST", "/v1/sandboxes", CreateRequest{}, &theirs)
	f.as(t, tokA, "POST", "/v1/sandboxes", CreateRequest{}, &mine)
	if got := next(alice, 1); len(got) != 1 || got[0] != "created "+mine.ID {
		t.Errorf("alice follows: %q, want her sandbox alone", got)
	}
	if code := f.as(t, tokA, "GET", "/v1/events?sandbox="+theirs.ID, nil, nil); code != 404 {
		t.Errorf("alice follows bob's sandbox: %d", code)
	}
}

// TestLifecycleFollowerBehind: a follower that does not read is let go,
// with what it was handed, then an error; the service goes on.
func TestLifecycleFollowerBehind(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{MaxSandboxes: 1000})
	stuck, got := make(chan struct{}), make(chan []string, 1)
	go func() {
		var seen []string
		first := true
		f.svc.FollowLifecycle(context.Background(), "", false, func(e LifecycleEvent) error {
			if first {
				first = false
				<-stuck
			}
			seen = append(seen, e.Type+e.Error)
			return nil
		}, func() {})
		got <- seen
	}()
	time.Sleep(100 * time.Millisecond) // it follows
	for range lifecycleQueue + 10 {
		sb := f.create(t, CreateRequest{})
		f.svc.Remove(context.Background(), sb.ID)
	}
	close(stuck)
	select {
	case seen := <-got:
		if n := len(seen); n < lifecycleQueue || seen[n-1] != errBehind.Error() {
			t.Errorf("a follower behind: %d events, the last %q; want its queue, then the error", n, seen[n-1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a follower behind was never let go")
	}
}
