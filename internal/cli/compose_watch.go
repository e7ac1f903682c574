package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/fsnotify/fsnotify"
	"github.com/moby/patternmatcher"
	"github.com/spf13/cobra"
)

// lodge compose watch: docker compose's watch of the services' sources
// (their develop.watch rules). The host's files are watched with fsnotify
// (inotify), a directory tree at a time; the changes of a quiet moment are
// applied together, per service: sync copies what changed into each of
// its running containers (one tar unpacked by tar in it, one rm for what
// went), restart restarts them, sync+restart and sync+exec do both, and
// rebuild builds its image and makes its containers again.

// watchQuiet is how long the sources must stay unchanged before what
// changed is applied.
const watchQuiet = 300 * time.Millisecond

// defaultWatchIgnore is what no rule syncs: version control and editors'
// scratch files, as docker compose leaves them out.
var defaultWatchIgnore = []string{".git", "**/.git", "**/*~", "**/.*.swp", "**/.*.swx", "**/4913", "**/.DS_Store"}

// watchRule is one develop.watch entry of a service.
type watchRule struct {
	service string
	t       types.Trigger
	ignore  *patternmatcher.PatternMatcher
	include *patternmatcher.PatternMatcher // nil: everything
}

// applies reports whether host path p is this rule's, and its path
// relative to the rule's.
func (w *watchRule) applies(p string) (string, bool) {
	rel, err := filepath.Rel(w.t.Path, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	rel = filepath.ToSlash(rel)
	if rel == "." {
		return rel, true
	}
	if skip, _ := w.ignore.MatchesOrParentMatches(rel); skip {
		return "", false
	}
	if w.include != nil {
		if in, _ := w.include.MatchesOrParentMatches(rel); !in {
			return "", false
		}
	}
	return rel, true
}

func composeWatchCommand(run func(func(*composeCmd, []string) error) func(*cobra.Command, []string) error) *cobra.Command {
	var noUp, prune bool
	cmd := &cobra.Command{Use: "watch [--no-up] [SERVICE...]",
		Short: "keep the services' containers in step with their sources as develop.watch says: sync files, restart, rebuild (until Ctrl-C)",
		RunE: run(func(c *composeCmd, args []string) error {
			return c.watch(args, noUp)
		})}
	cmd.Flags().BoolVar(&noUp, "no-up", false, "do not make and start the services first (lodge compose up -d)")
	cmd.Flags().BoolVar(&prune, "prune", true, "accepted for docker compose's sake (lodge keeps no dangling images from a rebuild)")
	return cmd
}

// watchRules are the develop.watch rules of the services named (all if
// none).
func (c *composeCmd) watchRules(services []string) ([]*watchRule, error) {
	names := services
	if len(names) == 0 {
		names = c.p.ServiceNames()
	}
	var rules []*watchRule
	for _, name := range names {
		s, ok := c.p.Services[name]
		if !ok {
			return nil, fmt.Errorf("no such service: %s", name)
		}
		if s.Develop == nil {
			continue
		}
		for _, t := range s.Develop.Watch {
			switch t.Action {
			case types.WatchActionSync, types.WatchActionSyncRestart, types.WatchActionSyncExec:
				if !path.IsAbs(t.Target) {
					return nil, fmt.Errorf("service %s: develop.watch %s of %s needs an absolute target in the container", name, t.Action, t.Path)
				}
			case types.WatchActionRebuild:
				if s.Build == nil {
					return nil, fmt.Errorf("service %s: develop.watch rebuild of %s needs a build section", name, t.Path)
				}
			case types.WatchActionRestart:
			default:
				return nil, fmt.Errorf("service %s: develop.watch action %q: want sync, restart, rebuild, sync+restart or sync+exec", name, t.Action)
			}
			if t.Action == types.WatchActionSyncExec && len(t.Exec.Command) == 0 {
				return nil, fmt.Errorf("service %s: develop.watch sync+exec of %s has no exec command", name, t.Path)
			}
			if _, err := os.Stat(t.Path); err != nil {
				return nil, fmt.Errorf("service %s: develop.watch: %w", name, err)
			}
			ignore, err := patternmatcher.New(append(slices.Clone(defaultWatchIgnore), t.Ignore...))
			if err != nil {
				return nil, fmt.Errorf("service %s: develop.watch ignore of %s: %w", name, t.Path, err)
			}
			r := &watchRule{service: name, t: t, ignore: ignore}
			if len(t.Include) > 0 {
				if r.include, err = patternmatcher.New(t.Include); err != nil {
					return nil, fmt.Errorf("service %s: develop.watch include of %s: %w", name, t.Path, err)
				}
			}
			rules = append(rules, r)
		}
	}
	if len(rules) == 0 {
		return nil, errors.New("none of the selected services is configured for watch: give one a develop.watch section")
	}
	return rules, nil
}

// watch runs lodge compose watch.
func (c *composeCmd) watch(services []string, noUp bool) error {
	rules, err := c.watchRules(services)
	if err != nil {
		return err
	}
	if !noUp {
		if err := c.up(upOpts{detach: true, pull: "missing"}, services); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(c.cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return c.watchLoop(ctx, rules)
}

// watchLoop watches the rules' sources and applies what changes, until
// ctx ends.
func (c *composeCmd) watchLoop(ctx context.Context, rules []*watchRule) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	for _, r := range rules {
		if err := addTree(w, r.t.Path); err != nil {
			return fmt.Errorf("service %s: watch %s: %w", r.service, r.t.Path, err)
		}
	}
	errOut := c.cmd.ErrOrStderr()
	for _, r := range rules {
		if r.t.InitialSync && r.t.Target != "" {
			c.apply(rules, []string{r.t.Path})
		}
	}
	fmt.Fprintln(errOut, "Watch enabled")
	pending := map[string]bool{}
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Events:
			if !ok {
				return nil
			}
			if e.Has(fsnotify.Create) {
				if fi, err := os.Lstat(e.Name); err == nil && fi.IsDir() {
					addTree(w, e.Name)
				}
			}
			if e.Has(fsnotify.Chmod) && !e.Has(fsnotify.Write|fsnotify.Create) {
				continue
			}
			pending[e.Name] = true
			quiet.Reset(watchQuiet)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			fmt.Fprintf(errOut, "watch: %v\n", err)
		case <-quiet.C:
			changed := make([]string, 0, len(pending))
			for p := range pending {
				changed = append(changed, p)
			}
			clear(pending)
			slices.Sort(changed)
			c.apply(rules, changed)
		}
	}
}

// addTree watches dir and every directory below it (a file: itself).
func addTree(w *fsnotify.Watcher, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return w.Add(dir)
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone meanwhile
		}
		if d.IsDir() {
			return w.Add(p)
		}
		return nil
	})
}

// apply carries out what the rules say of the changed host paths, a
// service at a time; what fails is told, and the watch goes on.
func (c *composeCmd) apply(rules []*watchRule, changed []string) {
	errOut := c.cmd.ErrOrStderr()
	for _, svc := range c.p.ServiceNames() {
		var mine []*watchRule
		for _, r := range rules {
			if r.service == svc {
				mine = append(mine, r)
			}
		}
		if len(mine) == 0 {
			continue
		}
		if err := c.applyService(svc, mine, changed); err != nil {
			fmt.Fprintf(errOut, "service %q: %v\n", svc, err)
		}
	}
}

// applyService applies one service's rules to the changed paths.
func (c *composeCmd) applyService(svc string, rules []*watchRule, changed []string) error {
	errOut := c.cmd.ErrOrStderr()
	var rebuild, restart bool
	var execs []types.ServiceHook
	var tw bytes.Buffer
	t := tar.NewWriter(&tw)
	var gone []string
	n, entries := 0, 0
	for _, r := range rules {
		hit := false
		for _, p := range changed {
			rel, ok := r.applies(p)
			if !ok {
				continue
			}
			hit = true
			n++
			if r.t.Target == "" {
				continue
			}
			dest := path.Join(r.t.Target, rel)
			if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
				gone = append(gone, dest)
				continue
			}
			added, err := addToTar(t, r, p, dest)
			if err != nil {
				return fmt.Errorf("sync %s: %w", p, err)
			}
			entries += added
		}
		if !hit {
			continue
		}
		switch r.t.Action {
		case types.WatchActionRebuild:
			rebuild = true
		case types.WatchActionRestart, types.WatchActionSyncRestart:
			restart = true
		case types.WatchActionSyncExec:
			execs = append(execs, r.t.Exec)
		}
	}
	if n == 0 {
		return nil
	}
	if rebuild {
		fmt.Fprintf(errOut, "Rebuilding service %q after changes were detected...\n", svc)
		c.rebuilding.Lock()
		defer c.rebuilding.Unlock()
		c.rebuilds.Add(1)
		return c.up(upOpts{detach: true, build: true, noDeps: true, pull: "missing"}, []string{svc})
	}
	if err := t.Close(); err != nil {
		return err
	}
	ctrs, err := c.containers([]string{svc}, false)
	if err != nil {
		return err
	}
	synced := entries > 0 || len(gone) > 0
	if synced {
		fmt.Fprintf(errOut, "Syncing service %q after %d changes were detected\n", svc, n)
	}
	for _, r := range ctrs {
		if _, running := r.status(); !running {
			continue
		}
		if synced {
			if err := c.syncInto(r.Name, entries, tw.Bytes(), gone); err != nil {
				return err
			}
		}
		if restart {
			if err := c.step("Container", r.Name, "Restarted", "restart", r.Name); err != nil {
				return err
			}
		}
		if err := c.hooks(c.p.Services[svc], r.Name, execs, "watch exec"); err != nil {
			return err
		}
	}
	return nil
}

// addToTar adds host path p (a directory: with what it holds that the rule
// does not ignore) to t at dest in the container, and returns how many
// entries it added.
func addToTar(t *tar.Writer, r *watchRule, p, dest string) (int, error) {
	n := 0
	err := filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile: its removal comes next
			}
			return err
		}
		if q != p {
			if _, ok := r.applies(q); !ok {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(p, q)
		err = addTarEntry(t, q, strings.TrimPrefix(path.Join(dest, filepath.ToSlash(rel)), "/"), fi)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // gone meanwhile: its removal comes next
		}
		if err == nil {
			n++
		}
		return err
	})
	return n, err
}

// syncInto unpacks a tar of what changed at the root of container name
// and removes what went, through tar and rm in it.
func (c *composeCmd) syncInto(name string, entries int, tarball []byte, gone []string) error {
	run := func(stdin io.Reader, args ...string) error {
		var errb bytes.Buffer
		code, err := c.lodge(stdin, io.Discard, &errb, args...)
		if err == nil && code != 0 {
			err = fmt.Errorf("container %s: %s", name, strings.TrimSpace(strings.TrimPrefix(errb.String(), "lodge: ")))
		}
		return err
	}
	if entries > 0 {
		if err := run(bytes.NewReader(tarball), "exec", "-i", name, "tar", "-x", "-f", "-", "-C", "/"); err != nil {
			return err
		}
	}
	if len(gone) > 0 {
		args := append([]string{"exec", name, "rm", "-rf", "--"}, gone...)
		if err := run(nil, args...); err != nil {
			return err
		}
	}
	return nil
}

// addTarEntry writes host file p, whose details are fi, to t as name: a
// regular file with its bytes (padded with zeros if it shrank meanwhile:
// its next change brings it whole), a symlink with its target.
func addTarEntry(t *tar.Writer, p, name string, fi fs.FileInfo) error {
	link := ""
	var err error
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	var f *os.File
	if fi.Mode().IsRegular() {
		if f, err = os.Open(p); err != nil {
			return err
		}
		defer f.Close()
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	h.Name, h.Uname, h.Gname = name, "", ""
	if err := t.WriteHeader(h); err != nil {
		return err
	}
	if f != nil {
		copied, err := io.Copy(t, io.LimitReader(f, h.Size))
		if err != nil {
			return err
		}
		if copied < h.Size {
			if _, err := t.Write(make([]byte, h.Size-copied)); err != nil {
				return err
			}
		}
	}
	return nil
}
