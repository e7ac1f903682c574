package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/runtimecli"
	"github.com/lodgeruntime/lodge/internal/state"
)

// containersDir keeps a record per container of `lodge` (kept after the
// container exits, until `lodge rm`), its bundle and its log: the
// config's images.containers_dir, set before any command runs.
var containersDir = "/var/lib/lodge/containers"

// ctrRecord is a container of `lodge`.
type ctrRecord struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Image    string    `json:"image"`
	ImageID  string    `json:"image_id"`
	Command  []string  `json:"command"`
	Created  time.Time `json:"created"`
	Detached bool      `json:"detached"`
	// Interactive: run with -i, so an attach gives the container its
	// input.
	Interactive bool `json:"interactive,omitempty"`
	// Tty: run with -t; detached, its terminal's master is its log
	// helper's.
	Tty        bool      `json:"tty,omitempty"`
	AutoRemove bool      `json:"auto_remove"`
	StopSignal string    `json:"stop_signal,omitempty"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Error is why the container ended other than by its own exit (its
	// VM died, ...), once known.
	Error string `json:"error,omitempty"`
	// Network is its place on the bridge network (nil: --network none).
	Network *ctrNetwork `json:"network,omitempty"`
	// Volumes are the named and anonymous volumes it mounts.
	Volumes []string `json:"volumes,omitempty"`
	// Mounts are its mounts of -v, --mount, --volumes-from and its
	// image's VOLUMEs (nil in records from before).
	Mounts []mountPoint `json:"mounts,omitempty"`
	// StartedAt is when its last run started (zero: never started).
	StartedAt time.Time `json:"started_at,omitzero"`
	// RestartPolicy is --restart's (nil: a record from before policies).
	RestartPolicy *restartPolicy `json:"restart_policy,omitempty"`
	// RestartCount counts the starts its policy made.
	RestartCount int `json:"restart_count,omitempty"`
	// RestartBackoff is the delay its policy waited before its last start.
	RestartBackoff time.Duration `json:"restart_backoff,omitempty"`
	// ManuallyStopped: lodge stop or kill ended it; its policy does not
	// start it again (until lodge start or restart does).
	ManuallyStopped bool `json:"manually_stopped,omitempty"`
	// Restarting: ended, and its policy will start it again shortly.
	Restarting bool `json:"restarting,omitempty"`
	// HostStopped: lodge system shutdown (the host going down) stopped
	// it; its policy does not start it again now, system restore does at
	// boot. A start clears it.
	HostStopped bool `json:"host_stopped,omitempty"`
	// Labels are --label's.
	Labels map[string]string `json:"labels,omitempty"`
	// StopTimeout is --stop-timeout's seconds (nil: lodge stop's 10).
	StopTimeout *int `json:"stop_timeout,omitempty"`
	// NetFiles is what --add-host and --dns* put in its /etc files.
	NetFiles *netFilesConf `json:"net_files,omitempty"`
	// StorageOpt is --storage-opt's, as inspect shows it (its size is
	// in the bundle's lodge-layers.json).
	StorageOpt map[string]string `json:"storage_opt,omitempty"`
	// Timeout is --timeout's: each run is stopped this long after it
	// starts (0: never), unless lodge update moved its deadline.
	Timeout time.Duration `json:"timeout,omitempty"`
	// OnTimeout is --on-timeout's: "pause" freezes a running container
	// at its deadline instead of stopping it ("": stop).
	OnTimeout string `json:"on_timeout,omitempty"`
	// Deadline is lodge update --timeout's for the run that started at
	// DeadlineFor (zero: that run has none).
	Deadline    time.Time `json:"deadline,omitzero"`
	DeadlineFor time.Time `json:"deadline_for,omitzero"`
	// Config is its config as docker keeps it: the image's with what the
	// command line changed (nil: a record from before lodge commit; the
	// image's is taken).
	Config *v1.Config `json:"config,omitempty"`
}

// removeAnonymous removes the anonymous volumes among names that no
// container but self (its ID, "" for none) mounts: --volumes-from shares
// one with another container, whose data it still is.
func removeAnonymous(names []string, self string) {
	var all []*ctrRecord
	for _, n := range names {
		if !strings.HasPrefix(n, "anon-") {
			continue
		}
		if all == nil {
			all, _ = allCtrs()
		}
		if slices.ContainsFunc(all, func(r *ctrRecord) bool { return r.ID != self && slices.Contains(r.Volumes, n) }) {
			continue
		}
		os.RemoveAll(filepath.Join(volumesDir, n))
	}
}

func ctrDir(id string) string    { return filepath.Join(containersDir, id) }
func bundleDir(id string) string { return filepath.Join(ctrDir(id), "bundle") }
func logPath(id string) string   { return filepath.Join(ctrDir(id), "json.log") }

func (r *ctrRecord) save() error {
	return state.Write(filepath.Join(ctrDir(r.ID), "container.json"), r)
}

func loadCtr(id string) (*ctrRecord, error) {
	var r ctrRecord
	if err := state.Read(filepath.Join(ctrDir(id), "container.json"), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func allCtrs() ([]*ctrRecord, error) {
	ents, err := os.ReadDir(containersDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*ctrRecord
	for _, e := range ents {
		if r, err := loadCtr(e.Name()); err == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// findCtr resolves a name, an id or a unique id prefix.
func findCtr(s string) (*ctrRecord, error) {
	all, err := allCtrs()
	if err != nil {
		return nil, err
	}
	var match *ctrRecord
	for _, r := range all {
		if r.Name == s || r.ID == s {
			return r, nil
		}
		if len(s) >= 3 && strings.HasPrefix(r.ID, s) {
			if match != nil {
				return nil, fmt.Errorf("%q names more than one container", s)
			}
			match = r
		}
	}
	if match == nil {
		return nil, fmt.Errorf("no such container: %s", s)
	}
	return match, nil
}

// status is the container's state now: the runtime's while it has one,
// else the record's.
func (r *ctrRecord) status() (st string, running bool) {
	if info, err := runtimecli.Inspect(runtimeState, r.ID); err == nil {
		switch info.Status {
		case "running", "paused", "created", "creating":
			return info.Status, info.Status == "running" || info.Status == "paused"
		}
	}
	if r.Restarting {
		return "restarting", false
	}
	return "exited", false
}

func (r *ctrRecord) exitCode() int {
	if r.ExitCode != nil {
		return *r.ExitCode
	}
	if info, err := runtimecli.Inspect(runtimeState, r.ID); err == nil && info.ExitStatus != nil {
		return *info.ExitStatus
	}
	return -1
}

func (r *ctrRecord) statusLine() string {
	st, _ := r.status()
	started := r.StartedAt
	if started.IsZero() {
		started = r.Created
	}
	switch st {
	case "running":
		return "Up " + humanDuration(time.Since(started)) + r.healthSuffix()
	case "paused":
		return "Up (Paused)"
	case "created", "creating":
		return "Created"
	}
	if r.Restarting {
		return fmt.Sprintf("Restarting (%d) %s", r.exitCode(), since(r.FinishedAt))
	}
	if r.FinishedAt.IsZero() {
		return fmt.Sprintf("Exited (%d)", r.exitCode())
	}
	return fmt.Sprintf("Exited (%d) %s", r.exitCode(), since(r.FinishedAt))
}

func uniqueName(want string) (string, error) {
	all, err := allCtrs()
	if err != nil {
		return "", err
	}
	taken := map[string]bool{}
	for _, r := range all {
		taken[r.Name] = true
	}
	if want != "" {
		if taken[want] {
			return "", fmt.Errorf("the container name %q is already in use", want)
		}
		if !validName(want) {
			return "", fmt.Errorf("invalid container name %q: use letters, digits, '_', '.', '-'", want)
		}
		return want, nil
	}
	for {
		n := "lodge_" + newID()[:8]
		if !taken[n] {
			return n, nil
		}
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && strings.ContainsRune("_.-", c))
		if !ok {
			return false
		}
	}
	return true
}

func addContainerCommands(root *cobra.Command, a *app) {
	var all, quiet, latest bool
	var format string
	var filters []string
	var last int
	ps := &cobra.Command{
		Use:   "ps [-a] [-q] [-n N | -l] [-f KEY=VALUE] [--format table|json|TEMPLATE]",
		Short: "list containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if latest {
				last = 1
			}
			if last < 0 {
				return errors.New("ps -n: want a positive number")
			}
			return listCtrs(cmd.OutOrStdout(), all, quiet, format, filters, last)
		},
	}
	ps.Flags().IntVarP(&last, "last", "n", 0, "the N containers made last, in any state")
	ps.Flags().BoolVarP(&latest, "latest", "l", false, "the container made last, in any state")
	ps.Flags().StringArrayVarP(&filters, "filter", "f", nil, "only containers with id=, name=, status=, ancestor=, exited= or label=")
	ps.Flags().BoolVarP(&all, "all", "a", false, "all containers (default: running ones)")
	ps.Flags().BoolVarP(&quiet, "quiet", "q", false, "IDs only")
	ps.Flags().StringVar(&format, "format", "table", "table, json or a Go template")

	var lo logOpts
	var since, until string
	logs := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--timestamps] [--since T] [--until T] CONTAINER",
		Short: "print a container's output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			now := time.Now()
			if lo.since, err = parseLogTime("since", since, now); err != nil {
				return err
			}
			if lo.until, err = parseLogTime("until", until, now); err != nil {
				return err
			}
			return printLogs(cmd.OutOrStdout(), cmd.ErrOrStderr(), r, lo)
		},
	}
	logs.Flags().BoolVarP(&lo.follow, "follow", "f", false, "keep printing until the container ends")
	logs.Flags().StringVarP(&lo.tail, "tail", "n", "all", "lines from the end to show")
	logs.Flags().BoolVarP(&lo.timestamps, "timestamps", "t", false, "show times")
	logs.Flags().StringVar(&since, "since", "", "only lines from this time on (2026-12-06T10:00:00Z, Unix seconds, or a duration back: 10m)")
	logs.Flags().StringVar(&until, "until", "", "only lines before this time (same forms)")

	var sig string
	kill := &cobra.Command{
		Use:   "kill [-s SIGNAL] CONTAINER...",
		Short: "signal containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachCtr(cmd, args, func(r *ctrRecord) error {
				markStopped(cmd.Context(), r)
				if err := runtimeOp(a, "kill", r.ID, sig); err != nil {
					return err
				}
				r.emit("kill", "signal", sig)
				return nil
			})
		},
	}
	kill.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal")

	var timeout int
	stop := &cobra.Command{
		Use:   "stop [-t SECONDS] CONTAINER...",
		Short: "stop containers (their stop signal, then SIGKILL)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachCtr(cmd, args, func(r *ctrRecord) error { return stopCtr(a, r, r.grace(cmd, timeout)) })
		},
	}
	stop.Flags().IntVarP(&timeout, "time", "t", stopGrace, "seconds to wait before SIGKILL")

	var force, rmVolumes bool
	rm := &cobra.Command{
		Use:   "rm [-f] CONTAINER...",
		Short: "remove containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachCtr(cmd, args, func(r *ctrRecord) error {
				if err := removeCtr(a, r, force); err != nil {
					return err
				}
				if rmVolumes {
					removeAnonymous(r.Volumes, r.ID)
				}
				return nil
			})
		},
	}
	rm.Flags().BoolVarP(&force, "force", "f", false, "stop a running container first")
	rm.Flags().BoolVarP(&rmVolumes, "volumes", "v", false, "remove its anonymous volumes too")

	wait := &cobra.Command{
		Use:   "wait CONTAINER...",
		Short: "wait for containers to end and print their exit codes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range args {
				r, err := findCtr(n)
				if err != nil {
					return err
				}
				r, err = waitCtr(cmd, r)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), r.exitCode())
			}
			return nil
		},
	}

	var inspectFormat, inspectType string
	inspect := &cobra.Command{
		Use:   "inspect [-f TEMPLATE] [--type container|image|network|volume] NAME...",
		Short: "describe containers, images, networks or volumes (a JSON array, or a Go template's output for each)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return inspectEach(cmd, args, inspectFormat, func(n string) (any, error) { return a.inspectAny(inspectType, n) })
		},
	}
	inspect.Flags().StringVarP(&inspectFormat, "format", "f", "", "a Go template, e.g. '{{.State.Status}}'")
	inspect.Flags().StringVar(&inspectType, "type", "", "only this kind of object: container, image, network or volume")

	var eo execOpts
	exec := &cobra.Command{
		Use:   "exec [-d] [-i] [-t] [-e VAR] [-w DIR] [-u USER] CONTAINER COMMAND [ARG...]",
		Short: "run a command in a running container",
		Args:  cobra.MinimumNArgs(2),
		RunE:  func(cmd *cobra.Command, args []string) error { return a.exec(cmd, eo, args[0], args[1:]) },
	}
	exec.Flags().SetInterspersed(false)
	exec.Flags().BoolVarP(&eo.interactive, "interactive", "i", false, "keep stdin open")
	exec.Flags().BoolVarP(&eo.tty, "tty", "t", false, "allocate a terminal")
	exec.Flags().BoolVarP(&eo.detach, "detach", "d", false, "leave the command running in the background")
	exec.Flags().StringArrayVarP(&eo.env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass the host's)")
	exec.Flags().StringVarP(&eo.workdir, "workdir", "w", "", "working directory")
	exec.Flags().StringVarP(&eo.user, "user", "u", "", "user (name|uid[:group|gid]), names from the image's /etc/passwd and /etc/group")
	exec.Flags().DurationVar(&eo.timeout, "timeout", 0, "kill the command (SIGKILL, in the guest) if it still runs after this long, e.g. 30s (not with -d)")

	port := &cobra.Command{
		Use:   "port CONTAINER",
		Short: "list a container's published ports",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			if r.Network != nil {
				for _, p := range r.Network.Ports {
					ip := p.HostIP
					if ip == "" {
						ip = "0.0.0.0"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%d/%s -> %s:%d\n", p.ContainerPort, p.Protocol, ip, p.HostPort)
				}
			}
			return nil
		},
	}
	top := &cobra.Command{
		Use:   "top CONTAINER",
		Short: "list a container's processes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			if _, running := r.status(); !running {
				return fmt.Errorf("container %s is not running", r.Name)
			}
			// The guest's view, from ps in the container where it has one.
			if a.execIn(cmd, r, strings.NewReader(""), cmd.OutOrStdout(), "ps", "-o", "pid,user,args") == nil {
				return nil
			}
			if code, msg := a.runtime(cmd.Context(), cmd.OutOrStdout(), "ps", r.ID); code != 0 {
				return exitError{code: code, err: errors.New(msg)}
			}
			return nil
		},
	}
	logger := &cobra.Command{Use: "__logger ID", Hidden: true, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return runLogger(a, args[0]) }}
	root.AddCommand(ps, logs, kill, stop, rm, wait, inspect, exec, port, top, logger)
}

func eachCtr(cmd *cobra.Command, names []string, f func(*ctrRecord) error) error {
	var errs []error
	for _, n := range names {
		r, err := findCtr(n)
		if err == nil {
			err = f(r)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintln(cmd.OutOrStdout(), n)
	}
	return errors.Join(errs...)
}

// runtime runs a lodge-runtime command, in this process, on the state
// root of lodge's containers: out gets what it prints, msg is its error
// message. A command that gives a process stdio (exec) hands it this
// process's descriptors 0-2, whatever out is.
func (a *app) runtime(ctx context.Context, out io.Writer, args ...string) (code int, msg string) {
	var errb strings.Builder
	env := runtimecli.StandardEnv(a.env.Version)
	env.IO = runtimecli.IO{In: strings.NewReader(""), Out: out, Err: &errb}
	code = runtimecli.Main(ctx, append([]string{"--root", runtimeState}, args...), env)
	return code, strings.TrimSpace(strings.TrimPrefix(errb.String(), "lodge-runtime: "))
}

// runtimeOp runs a lodge-runtime command whose output does not matter.
func runtimeOp(a *app, op string, args ...string) error {
	if code, msg := a.runtime(a.ctx(), io.Discard, append([]string{op}, args...)...); code != 0 {
		return fmt.Errorf("%s: %s", op, msg)
	}
	return nil
}

// stopGrace is how long stop waits before SIGKILL unless told: docker's
// 10 s (stop and restart's -t default).
const stopGrace = 10

// grace is how long stop waits before SIGKILL: -t's seconds where given,
// else the container's own (stopTimeout).
func (r *ctrRecord) grace(cmd *cobra.Command, seconds int) time.Duration {
	if cmd.Flags().Changed("time") {
		return time.Duration(seconds) * time.Second
	}
	return r.stopTimeout()
}

// stopTimeout is its --stop-timeout, else stopGrace.
func (r *ctrRecord) stopTimeout() time.Duration {
	if r.StopTimeout != nil {
		return time.Duration(*r.StopTimeout) * time.Second
	}
	return stopGrace * time.Second
}

func stopCtr(a *app, r *ctrRecord, grace time.Duration) error {
	markStopped(a.ctx(), r) // also cancels a restart its policy has not made yet
	_, running := r.status()
	if err := signalStop(a, r, grace); err != nil {
		return err
	}
	if running {
		r.emit("stop")
	}
	return nil
}

// signalStop stops a running container: its stop signal, then SIGKILL
// after grace.
func signalStop(a *app, r *ctrRecord, grace time.Duration) error {
	if _, running := r.status(); !running {
		return nil
	}
	sig := r.StopSignal
	if sig == "" {
		sig = "TERM"
	}
	if runtimeOp(a, "kill", r.ID, sig) == nil {
		r.emit("kill", "signal", sig)
	}
	if st, _ := r.status(); st == "paused" {
		grace = 0 // frozen: its signal waits, unhandled, for a thaw that will not come
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if _, running := r.status(); !running {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if runtimeOp(a, "kill", r.ID, "KILL") == nil {
		r.emit("kill", "signal", "KILL")
	}
	for range 100 {
		if _, running := r.status(); !running {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("container %s did not stop", r.Name)
}

func removeCtr(a *app, r *ctrRecord, force bool) error {
	// stopCtr marks a running one stopped; one that is not is marked here:
	// its monitor, waiting to restart it, then ends.
	if _, running := r.status(); !running {
		markStopped(a.ctx(), r)
	} else if !force {
		return fmt.Errorf("container %s is running: stop it first, or rm -f", r.Name)
	} else if err := stopCtr(a, r, 0); err != nil {
		return err
	}
	if _, err := runtimecli.Inspect(runtimeState, r.ID); err == nil {
		if err := runtimeOp(a, "delete", "--force", r.ID); err != nil {
			return err
		}
	}
	// Its monitor (log helper, or a foreground run) ends once it has seen
	// the end, or the mark: rm returns after it, as docker's does, unless
	// it hangs.
	if f, err := takeMonitor(a.ctx(), r, 10*time.Second); err == nil {
		defer f.Close()
	}
	// The VM a killed commit, diff, export or cp of it left (inEndedVM).
	if _, err := runtimecli.Inspect(runtimeState, changesID(r)); err == nil {
		runtimeOp(a, "delete", "--force", changesID(r))
	}
	if err := leaveBridge(a.ctx(), r.ID, r.Network); err != nil {
		return err
	}
	os.Remove(attachSock(r.ID)) // its helper's, if it died before it could
	if err := os.RemoveAll(ctrDir(r.ID)); err != nil {
		return err
	}
	r.emit("destroy")
	return nil
}

// waitCtr waits until the container has ended and its exit is recorded.
func waitCtr(cmd *cobra.Command, r *ctrRecord) (*ctrRecord, error) {
	for {
		if cur, err := loadCtr(r.ID); err == nil {
			r = cur
		} else {
			return r, nil // removed (--rm): nothing more to learn
		}
		if _, running := r.status(); !running && r.ExitCode != nil {
			return r, nil
		}
		select {
		case <-cmd.Context().Done():
			return r, cmd.Context().Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type psRow struct {
	ID      string `json:"ID"`
	Image   string `json:"Image"`
	Command string `json:"Command"`
	Created string `json:"RunningFor"`
	Status  string `json:"Status"`
	Ports   string `json:"Ports"`
	Names   string `json:"Names"`
	State   string `json:"State"`
}

// psRowOf is ps's line of a container in state st.
func psRowOf(r *ctrRecord, st string, running bool) psRow {
	cmd := strings.Join(r.Command, " ")
	if len(cmd) > 20 {
		cmd = cmd[:19] + "…"
	}
	var ports []string
	if r.Network != nil && running {
		for _, p := range r.Network.Ports {
			ports = append(ports, p.String())
		}
	}
	return psRow{ID: r.ID[:12], Image: displayName(r.Image), Command: fmt.Sprintf("%q", cmd),
		Created: since(r.Created), Status: r.statusLine(), Names: r.Name, State: st, Ports: strings.Join(ports, ", ")}
}

func listCtrs(w io.Writer, all, quiet bool, format string, filters []string, last int) error {
	f, err := parseFilters(filters)
	if err != nil {
		return err
	}
	ctrs, err := allCtrs()
	if err != nil {
		return err
	}
	// A status filter asks for what it names, running or not, and -n the
	// last ones made in any state (docker's). ctrs are newest first.
	all = all || len(f["status"]) > 0 || len(f["exited"]) > 0 || last > 0
	var rows []psRow
	for _, r := range ctrs {
		if last > 0 && len(rows) == last {
			break
		}
		st, running := r.status()
		if !all && !running && !r.Restarting || !f.match(r, st) {
			continue
		}
		rows = append(rows, psRowOf(r, st, running))
	}
	if quiet {
		for _, r := range rows {
			fmt.Fprintln(w, r.ID)
		}
		return nil
	}
	return printList(w, rows, format, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tPORTS\tNAMES", func(r psRow) string {
		return strings.Join([]string{r.ID, r.Image, r.Command, r.Created, r.Status, r.Ports, r.Names}, "\t")
	})
}

func inspectCtr(r *ctrRecord) map[string]any {
	st, running := r.status()
	path, args := "", []string{}
	if len(r.Command) > 0 {
		path, args = r.Command[0], r.Command[1:]
	}
	policy := restartPolicy{Name: "no"}
	if r.RestartPolicy != nil {
		policy = *r.RestartPolicy
	}
	pid := 0
	if info, err := runtimecli.Inspect(runtimeState, r.ID); err == nil && running {
		pid = info.Pid
	}
	return map[string]any{
		"Id": r.ID, "Name": "/" + r.Name, "Created": r.Created, "Path": path, "Args": args,
		"State": map[string]any{"Status": st, "Running": running, "Paused": st == "paused", "Restarting": r.Restarting,
			"ExitCode": r.exitCode(), "Pid": pid, "StartedAt": r.StartedAt, "FinishedAt": r.FinishedAt, "Error": r.Error,
			"Deadline": r.deadline(), "Health": r.health()},
		"RestartCount": r.RestartCount, "Image": "sha256:" + r.ImageID,
		"Config": map[string]any{"Image": displayName(r.Image), "Cmd": r.Command, "Labels": r.Labels, "StopSignal": r.StopSignal, "StopTimeout": r.StopTimeout,
			"Tty": r.Tty, "OpenStdin": r.Interactive, "AttachStdout": !r.Detached, "AttachStderr": !r.Detached},
		"HostConfig":      map[string]any{"AutoRemove": r.AutoRemove, "Runtime": "lodge", "RestartPolicy": policy, "Egress": r.egress(), "StorageOpt": r.StorageOpt},
		"NetworkSettings": networkSettings(r.Network, r.aliases(), running),
		"Mounts":          mountsOf(r),
		"LogPath":         logPath(r.ID),
	}
}

// mountsOf is inspect's Mounts: never null, as docker's.
func mountsOf(r *ctrRecord) []mountPoint {
	if r.Mounts == nil {
		return []mountPoint{}
	}
	return r.Mounts
}
