package transport

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// WatchEvent is one change below a watched directory, a JSON object a
// line on a KindWatch stream. Type is create, write, remove, rename (the
// old name of a move; its new name comes as a create), chmod (mode, owner,
// times) or overflow (events were lost: the guest's queue was full, or a
// new directory was beyond the watch's bound). Name is relative to the
// watched directory; "" is the directory itself, whose removal or move
// ends the watch.
type WatchEvent struct {
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
	Dir  bool   `json:"dir,omitempty"`
}

// ErrBadEvent reports a watch event no agent sends.
var ErrBadEvent = errors.New("bad watch event")

// WatchTypes are the event types a watch sends.
var WatchTypes = []string{"create", "write", "remove", "rename", "chmod", "overflow"}

// Check refuses an event no agent sends: the guest writes them.
func (e WatchEvent) Check() error {
	known := false
	for _, t := range WatchTypes {
		known = known || e.Type == t
	}
	switch {
	case !known:
		return fmt.Errorf("%w: watch event of type %.32q", ErrBadEvent, e.Type)
	case len(e.Name) > MaxWatchPath || strings.ContainsRune(e.Name, 0):
		return fmt.Errorf("%w: watch event's name of %d bytes", ErrBadEvent, len(e.Name))
	case e.Name != "" && (path.IsAbs(e.Name) || path.Clean(e.Name) != e.Name || e.Name == "." || e.Name == ".." || strings.HasPrefix(e.Name, "../")):
		return fmt.Errorf("%w: watch event's name %.64q is not below the directory", ErrBadEvent, e.Name)
	}
	return nil
}
