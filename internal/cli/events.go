package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// Lodge has no daemon to hold docker's event stream, so each lodge process
// appends what it does to one journal, and `lodge events` reads it and
// follows it, as podman's file event backend does. An event is docker's
// message (`docker events --format json` reads the same), one JSON line.
// The journal is in /run: like docker's, events do not outlive the host's
// boot; it is rotated at eventsMax, one old file kept.

// eventsPath is the journal.
var eventsPath = "/run/lodge/events.log"

// eventsMax is the journal's size at which it is rotated.
var eventsMax int64 = 4 << 20

// event is docker's events message.
type event struct {
	Status   string     `json:"status,omitempty"`
	ID       string     `json:"id,omitempty"`
	From     string     `json:"from,omitempty"`
	Type     string     `json:"Type"`
	Action   string     `json:"Action"`
	Actor    eventActor `json:"Actor"`
	Scope    string     `json:"scope"`
	Time     int64      `json:"time"`
	TimeNano int64      `json:"timeNano"`
}

type eventActor struct {
	ID         string            `json:"ID"`
	Attributes map[string]string `json:"Attributes"`
}

// emit appends an event of typ (container, image, network, volume) to the
// journal: action done to id, with attrs. An event that cannot be written
// is lost, never the command's failure.
func emit(typ, action, id string, attrs map[string]string) {
	now := time.Now()
	e := event{Type: typ, Action: action, Actor: eventActor{ID: id, Attributes: attrs}, Scope: "local", Time: now.Unix(), TimeNano: now.UnixNano()}
	if typ == "container" || typ == "image" {
		// docker's older fields, which scripts still read.
		e.Status, e.ID, e.From = action, id, attrs["image"]
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(eventsPath), 0o700); err != nil {
		return
	}
	f, err := os.OpenFile(eventsPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	// One write(2) of the whole line, under a shared lock; a rotation
	// takes it exclusively, so no line is half in each file.
	if unix.Flock(int(f.Fd()), unix.LOCK_SH) != nil {
		return
	}
	f.Write(append(b, '\n'))
	if fi, err := f.Stat(); err == nil && fi.Size() > eventsMax {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		rotateEvents(f)
	}
}

// rotateEvents moves a full journal f aside, if it is still the journal.
func rotateEvents(f *os.File) {
	if unix.Flock(int(f.Fd()), unix.LOCK_EX) != nil {
		return
	}
	fi, err := f.Stat()
	cur, cerr := os.Stat(eventsPath)
	if err == nil && cerr == nil && os.SameFile(fi, cur) && fi.Size() > eventsMax {
		os.Rename(eventsPath, eventsPath+".1")
	}
}

// emit records an event of container r: its image, name and labels, and
// attrs (key, value, ...).
func (r *ctrRecord) emit(action string, attrs ...string) {
	a := map[string]string{"image": r.Image, "name": r.Name}
	maps.Copy(a, r.Labels)
	for i := 0; i+1 < len(attrs); i += 2 {
		a[attrs[i]] = attrs[i+1]
	}
	emit("container", action, r.ID, a)
}

// emitImage records an event of an image: id (its ID, or the name pulled
// or pushed) and the name it has in the store.
func emitImage(action, id, storeName string) {
	emit("image", action, id, map[string]string{"name": displayName(storeName)})
}

// eventFilter is events' -f: each key's values are alternatives (labels
// excepted: every one must hold), and every key must match (docker's
// rules).
type eventFilter map[string][]string

var eventFilterKeys = []string{"type", "event", "container", "image", "label", "network", "volume"}

func parseEventFilters(in []string) (eventFilter, error) {
	f := eventFilter{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !slices.Contains(eventFilterKeys, k) {
			return nil, fmt.Errorf("--filter %q: want KEY=VALUE, KEY one of %s", kv, strings.Join(eventFilterKeys, ", "))
		}
		f[k] = append(f[k], v)
	}
	return f, nil
}

func (f eventFilter) match(e event) bool {
	any := func(key string, ok func(string) bool) bool {
		vs, given := f[key]
		return !given || slices.ContainsFunc(vs, ok)
	}
	name := e.Actor.Attributes["name"]
	// An ID given in part matches the whole, as docker's does.
	ids := func(of string) func(string) bool {
		return func(v string) bool {
			return e.Type == of && (v == name || (v != "" && strings.HasPrefix(e.Actor.ID, v)))
		}
	}
	return any("type", func(v string) bool { return v == e.Type }) &&
		// "health_status: healthy" is a health_status event.
		any("event", func(v string) bool { return v == e.Action || strings.HasPrefix(e.Action, v+":") }) &&
		any("container", ids("container")) &&
		any("network", ids("network")) &&
		any("volume", ids("volume")) &&
		any("image", func(v string) bool {
			img := e.Actor.Attributes["image"]
			if e.Type == "image" {
				img = e.Actor.ID
			}
			return img == v || img == normalise(v) || strings.TrimSuffix(img, ":latest") == v
		}) &&
		// Every label asked for, as docker's (the other keys' values
		// are alternatives).
		!slices.ContainsFunc(f["label"], func(v string) bool {
			k, val, hasVal := strings.Cut(v, "=")
			got, ok := e.Actor.Attributes[k]
			return !ok || hasVal && got != val
		})
}

// eventText is an event as docker prints it without --format.
func eventText(e event) string {
	var attrs []string
	for _, k := range slices.Sorted(maps.Keys(e.Actor.Attributes)) {
		attrs = append(attrs, k+"="+e.Actor.Attributes[k])
	}
	s := time.Unix(0, e.TimeNano).UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " " + e.Type + " " + e.Action + " " + e.Actor.ID
	if len(attrs) > 0 {
		s += " (" + strings.Join(attrs, ", ") + ")"
	}
	return s
}

type eventsOpts struct {
	since, until, format string
	filters              []string
}

func addEventsCommand(root *cobra.Command, a *app) {
	var o eventsOpts
	events := &cobra.Command{
		Use:   "events [--since T] [--until T] [-f KEY=VALUE] [--format json|TEMPLATE]",
		Short: "what lodge did to containers, images, networks and volumes: those since --since, then each as it comes (until --until or Ctrl-C)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.events(cmd, o)
		},
	}
	f := events.Flags()
	f.StringVar(&o.since, "since", "", "show events since this time (RFC 3339, Unix seconds, or a duration back from now: 10m)")
	f.StringVar(&o.until, "until", "", "stop at this time (as --since)")
	f.StringArrayVarP(&o.filters, "filter", "f", nil, "only these: type=, event=, container=, image=, label=KEY[=VALUE], network=, volume= (again for more)")
	f.StringVar(&o.format, "format", "", "json, or a Go template ({{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}})")
	root.AddCommand(events)
}

func (a *app) events(cmd *cobra.Command, o eventsOpts) error {
	now := time.Now()
	since, err := parseLogTime("since", o.since, now)
	if err != nil {
		return err
	}
	until, err := parseLogTime("until", o.until, now)
	if err != nil {
		return err
	}
	if o.since == "" {
		since = now // docker's: only what comes from now on
	}
	filter, err := parseEventFilters(o.filters)
	if err != nil {
		return err
	}
	print, err := eventPrinter(cmd.OutOrStdout(), o.format)
	if err != nil {
		return err
	}
	return followEvents(cmd.Context(), since, until, func(e event) {
		if filter.match(e) {
			print(e)
		}
	})
}

// followEvents hands show the journal's events from since (those of its
// old file first), then each as it is written, until until (zero: never)
// or ctx ends.
func followEvents(ctx context.Context, since, until time.Time, each func(event)) error {
	show := func(e event) bool {
		t := time.Unix(0, e.TimeNano)
		if !until.IsZero() && t.After(until) {
			return false
		}
		if !t.Before(since) {
			each(e)
		}
		return true
	}
	// The old file's events, then the journal's, followed.
	if old, err := os.Open(eventsPath + ".1"); err == nil {
		(&journal{f: old}).next(show)
		old.Close()
	}
	var j *journal
	defer func() {
		if j != nil {
			j.f.Close()
		}
	}()
	for {
		if j == nil {
			if f, err := os.Open(eventsPath); err == nil {
				j = &journal{f: f}
			}
		}
		if j != nil && !j.next(show) {
			return nil // past --until
		}
		if !until.IsZero() && time.Now().After(until) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		// Rotated: what is left of the old file, then the new one.
		if cur, err := os.Stat(eventsPath); j != nil && (err != nil || !sameFile(j.f, cur)) {
			if !j.next(show) {
				return nil
			}
			j.f.Close()
			j = nil
		}
	}
}

func sameFile(f *os.File, fi os.FileInfo) bool {
	mine, err := f.Stat()
	return err == nil && os.SameFile(mine, fi)
}

// journal reads the whole lines of a journal file as they are written.
type journal struct {
	f       *os.File
	pending []byte // a line not yet whole
}

// next hands show each event written since the last call, and returns
// false once show says stop.
func (j *journal) next(show func(event) bool) bool {
	buf := make([]byte, 64<<10)
	for {
		n, err := j.f.Read(buf)
		j.pending = append(j.pending, buf[:n]...)
		for {
			i := bytes.IndexByte(j.pending, '\n')
			if i < 0 {
				break
			}
			line := j.pending[:i]
			j.pending = j.pending[i+1:]
			var e event
			if json.Unmarshal(line, &e) == nil && !show(e) {
				return false
			}
		}
		if n == 0 || err != nil {
			j.pending = slices.Clone(j.pending)
			return true
		}
	}
}

// eventPrinter prints an event as format says: docker's line (""), JSON,
// or a Go template's output.
func eventPrinter(w io.Writer, format string) (func(event), error) {
	switch format {
	case "":
		return func(e event) { fmt.Fprintln(w, eventText(e)) }, nil
	case "json", "{{json .}}":
		enc := json.NewEncoder(w)
		return func(e event) { enc.Encode(e) }, nil
	}
	t, err := formatTemplate(format)
	if err != nil {
		return nil, fmt.Errorf("--format: %w", err)
	}
	return func(e event) {
		if t.Execute(w, e) == nil {
			fmt.Fprintln(w)
		}
	}, nil
}
