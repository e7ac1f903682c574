package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"path"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/runtimecli"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// watchEvent is what lodge watch prints of one change.
type watchEvent struct {
	Time string `json:"time"`
	Type string `json:"type"`
	// Name is relative to the watched directory, Path absolute in the
	// container.
	Name string `json:"name"`
	Path string `json:"path"`
	Dir  bool   `json:"dir,omitempty"`
}

// maxWatchLine bounds one event from the guest: a name of PATH_MAX bytes,
// every one escaped.
const maxWatchLine = 8 + 6*transport.MaxWatchPath + 64

func addWatchCommand(root *cobra.Command, a *app) {
	var recursive bool
	var format string
	cmd := &cobra.Command{
		Use:   "watch [-r] [--format json] CONTAINER DIR",
		Short: "print what changes below a directory of a running container, as it happens (until Ctrl-C, or the directory goes)",
		Long: `Print what changes below DIR, a directory of a running container (its path
inside it), as it happens: create, write, remove, rename (a move's old name; its new
name comes as a create), chmod (mode, owner or times), or overflow (events were lost).
With -r, the directories below DIR are watched too, new ones as they come.
--format json prints one JSON object a line, {"time", "type", "name", "path", "dir"},
the first {"type": "watching"} once the watch is in place.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "" && format != "json" {
				return fmt.Errorf("--format %q: want json, or none", format)
			}
			dir := args[1]
			if !path.IsAbs(dir) {
				return fmt.Errorf("%s: give the directory's absolute path in the container", dir)
			}
			dir = path.Clean(dir)
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			if _, running := r.status(); !running {
				return fmt.Errorf("container %s is not running", r.Name)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			c, err := runtimecli.Watch(ctx, runtimeState, r.ID, dir, recursive)
			if err != nil {
				return fmt.Errorf("container %s: %w", r.Name, err)
			}
			defer c.Close()
			context.AfterFunc(ctx, func() { c.Close() })
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			print := func(e watchEvent) error {
				if format == "json" {
					return enc.Encode(e)
				}
				p := e.Path
				if e.Dir && p != "/" {
					p += "/"
				}
				_, err := fmt.Fprintf(out, "%s %-8s %s\n", e.Time, e.Type, p)
				return err
			}
			if format == "json" {
				enc.Encode(watchEvent{Time: now(), Type: "watching", Path: dir, Dir: true})
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "watching %s in %s\n", dir, r.Name)
			}
			err = readWatch(c, dir, print)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				return fmt.Errorf("container %s: %w", r.Name, err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "watch the directories below it too")
	cmd.Flags().StringVar(&format, "format", "", "json: one JSON object a line")
	root.AddCommand(cmd)
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// readWatch reads a watch's events from the guest, checks each, and hands
// it to print with the host's time and its path in the container, until
// the stream ends.
func readWatch(r io.Reader, dir string, print func(watchEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxWatchLine)
	for sc.Scan() {
		var e transport.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("the watch: %w: %v", transport.ErrBadEvent, err)
		}
		if err := e.Check(); err != nil {
			return fmt.Errorf("the watch: %w", err)
		}
		if err := print(watchEvent{Time: now(), Type: e.Type, Name: e.Name, Path: path.Join(dir, e.Name), Dir: e.Dir}); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("the watch: %w: a line longer than %d bytes", transport.ErrBadEvent, maxWatchLine)
		}
		return fmt.Errorf("the watch: %w", err)
	}
	return nil
}
