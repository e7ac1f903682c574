package integration

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLodgeEvents: lodge events shows what lodge did to a container, in
// order, both to a follower that was there as it happened and from the
// journal afterwards (--since), with docker's fields.
func TestLodgeEvents(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	since := time.Now().Add(-time.Second).Format(time.RFC3339Nano)
	follow := exec.Command(l.bin, "events", "--format", "json", "-f", "container=evs", "-f", "container=evr")
	follow.Env = l.env
	out, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	followed := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e struct {
				Action string
				Actor  struct{ Attributes map[string]string }
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				followed <- e.Actor.Attributes["name"] + " " + e.Action + " " + e.Actor.Attributes["exitCode"]
			}
		}
		close(followed)
	}()
	time.Sleep(time.Second) // it follows

	id := strings.TrimSpace(l.must("run", "-d", "--name", "evs", ref, "sleep", "600"))
	l.must("pause", "evs")
	l.must("unpause", "evs")
	l.run("", "exec", "evs", "sh", "-c", "exit 4")
	l.must("stop", "-t", "0", "evs")
	l.must("rm", "evs")
	if r := l.run("", "run", "--rm", "--name", "evr", ref, "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("run --rm: exit %d %s", r.code, r.stderr)
	}
	// In order, but for what the stop and the container's monitor (its
	// die) write at once: each of those before its destroy.
	ordered := []string{"evs create ", "evs start ", "evs pause ", "evs unpause ", "evs exec_start: sh -c exit 4 ", "evs exec_die 4",
		"evs kill ", "evs destroy ", "evr create ", "evr start ", "evr die 3", "evr destroy "}
	unordered := []string{"evs die 137", "evs stop "}
	var got []string
	for deadline := time.After(30 * time.Second); !slices.Contains(got, "evr destroy "); {
		select {
		case e := <-followed:
			got = append(got, e)
			continue
		case <-deadline:
		}
		break
	}
	rest := slices.Clone(got)
	for _, u := range unordered {
		i, d := slices.Index(rest, u), slices.Index(rest, "evs destroy ")
		if i < 0 || i > d {
			t.Errorf("%q not followed before evs's destroy", u)
		} else {
			rest = slices.Delete(rest, i, i+1)
		}
	}
	rest = slices.Compact(rest) // its stop signal, then SIGKILL: two kills
	if strings.Join(rest, "|") != strings.Join(ordered, "|") {
		t.Errorf("followed:\n%s\nwant, in this order:\n%s\nand %q", strings.Join(got, "\n"), strings.Join(ordered, "\n"), unordered)
	}
	// The same, read back from the journal, in docker's line.
	lines := l.must("events", "--since", since, "--until", "0s", "-f", "container="+id[:12], "-f", "event=die")
	if !strings.Contains(lines, " container die "+id+" (exitCode=137, image=") || !strings.Contains(lines, "name=evs") || strings.Count(lines, "\n") != 1 {
		t.Errorf("events --since: %q", lines)
	}
}
