package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/transport"
)

func TestReadWatch(t *testing.T) {
	var got []string
	print := func(e watchEvent) error {
		if e.Time == "" {
			t.Errorf("%+v: no time", e)
		}
		got = append(got, e.Type+" "+e.Path+" "+e.Name)
		return nil
	}
	in := `{"type":"create","name":"a/b.txt"}` + "\n" + `{"type":"remove","dir":true}` + "\n"
	if err := readWatch(strings.NewReader(in), "/work", print); err != nil {
		t.Fatal(err)
	}
	if want := []string{"create /work/a/b.txt a/b.txt", "remove /work "}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}

	// What no agent sends ends the watch with an error, printing nothing of it.
	for name, in := range map[string]string{
		"outside":   `{"type":"create","name":"../../etc/passwd"}` + "\n",
		"absolute":  `{"type":"create","name":"/etc/passwd"}` + "\n",
		"type":      `{"type":"exec","name":"x"}` + "\n",
		"not json":  "create x\n",
		"huge line": `{"type":"create","name":"` + strings.Repeat("a", 2*maxWatchLine) + `"}` + "\n",
		"cut":       `{"type":"create","na`,
	} {
		got = nil
		err := readWatch(strings.NewReader(in), "/work", print)
		if err == nil || len(got) > 0 {
			t.Errorf("%s: %v, printed %q", name, err, got)
		}
		if name != "cut" && !errors.Is(err, transport.ErrBadEvent) {
			t.Errorf("%s: %v, want ErrBadEvent", name, err)
		}
	}
}
