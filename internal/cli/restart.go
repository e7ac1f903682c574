package cli

// A container of lodge started again once it has ended (`lodge start`,
// `lodge restart`), and docker's restart policies (`lodge run --restart`).
//
// Each run of a container has one monitor: the process that records how
// it ends (its log helper when detached, else the `lodge run` that runs
// it). The monitor holds the container's monitor lock for its life; a
// start waits for the lock, so a container is never started again while
// its last run's monitor still leaves the network or records the exit,
// and never twice at once. The lock's descriptor is handed on to the next
// monitor (the new log helper), so that it is held without a gap.
//
//	lodge start / restart        log helper (run n)          log helper (run n+1)
//	  |  (stop: ManuallyStopped)   | container ends
//	  |                            | delete, leave network,
//	  |                            | record exit, policy?  -- yes --> (startAgain below,
//	  |                            | exit: lock released          from the helper itself)
//	  | take the monitor lock <----'
//	  | join network, record run n+1
//	  | start log helper, lock fd ------------------------------> holds it
//	  | runtime run -d (same bundle, writable layer kept)
//	  | close own lock fd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/runtimecli"
)

// restartPolicy is docker's --restart: no, always, unless-stopped or
// on-failure[:MAX].
type restartPolicy struct {
	Name string `json:"Name"`
	// MaximumRetryCount bounds on-failure's restarts (0: no bound).
	MaximumRetryCount int `json:"MaximumRetryCount"`
}

func parseRestart(s string) (restartPolicy, error) {
	name, max, hasMax := strings.Cut(s, ":")
	p := restartPolicy{Name: name}
	switch name {
	case "", "no":
		p.Name = "no"
	case "always", "unless-stopped", "on-failure":
	default:
		return p, fmt.Errorf("--restart %q: want no, always, unless-stopped or on-failure[:MAX-RETRIES]", s)
	}
	if hasMax {
		n, err := strconv.Atoi(max)
		if name != "on-failure" || err != nil || n < 0 {
			return p, fmt.Errorf("--restart %q: only on-failure takes a count of retries, a number from 0", s)
		}
		p.MaximumRetryCount = n
	}
	return p, nil
}

// restarts says whether a container that has ended as r records is
// started again by its policy: not after `lodge stop` or `lodge kill`,
// on-failure only after a failure (a non-zero exit, or its VM lost) and
// at most MaximumRetryCount times. always and unless-stopped differ only
// where a daemon restarts, which lodge has none of.
func (p restartPolicy) restarts(r *ctrRecord) bool {
	if r.ManuallyStopped || r.AutoRemove || r.HostStopped {
		return false
	}
	switch p.Name {
	case "always", "unless-stopped":
		return true
	case "on-failure":
		failed := r.Error != "" || r.ExitCode == nil || *r.ExitCode != 0
		return failed && (p.MaximumRetryCount == 0 || r.RestartCount < p.MaximumRetryCount)
	}
	return false
}

// restartDelay is how long a container's policy waits before it starts
// it again, as docker does: 100 ms, doubled after each run shorter than
// 10 s, at most a minute; a run of 10 s or more starts the count again.
func restartDelay(r *ctrRecord) time.Duration {
	d := r.RestartBackoff
	if r.StartedAt.IsZero() || r.FinishedAt.Sub(r.StartedAt) >= 10*time.Second || d <= 0 {
		return 100 * time.Millisecond
	}
	return min(2*d, time.Minute)
}

func monitorLockPath(id string) string { return filepath.Join(ctrDir(id), "monitor.lock") }

// holdEnded takes the monitor lock of a container that is not running
// (waiting up to 10 s for its last run's monitor to finish), so that no
// start runs it meanwhile, and returns its record as it is then.
func holdEnded(ctx context.Context, r *ctrRecord) (*os.File, *ctrRecord, error) {
	monitor, err := takeMonitor(ctx, r, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	fresh, err := loadCtr(r.ID)
	if err != nil {
		monitor.Close()
		return nil, nil, err
	}
	return monitor, fresh, nil
}

// takeMonitor takes the container's monitor lock, waiting up to wait for
// the monitor of its last run to finish.
func takeMonitor(ctx context.Context, r *ctrRecord, wait time.Duration) (*os.File, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	f, err := filelock.LockFile(ctx, monitorLockPath(r.ID), wait > 0)
	if err != nil {
		return nil, fmt.Errorf("container %s: its last run is still ending (its log helper holds %s): try again (%w)", r.Name, monitorLockPath(r.ID), err)
	}
	return f, nil
}

// updateCtr changes the container's record under its record lock (its
// monitor, `lodge stop` and `lodge start` may write it at once) and
// returns what it wrote.
func updateCtr(ctx context.Context, id string, change func(*ctrRecord)) (*ctrRecord, error) {
	unlock, err := filelock.Lock(ctx, filepath.Join(ctrDir(id), "record.lock"), true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r, err := loadCtr(id)
	if err != nil {
		return nil, err
	}
	change(r)
	return r, r.save()
}

// markStopped records that the user stopped the container (stop, kill,
// restart), so that its restart policy does not start it again.
func markStopped(ctx context.Context, r *ctrRecord) {
	if r.RestartPolicy == nil || r.RestartPolicy.Name == "no" {
		return
	}
	updateCtr(ctx, r.ID, func(c *ctrRecord) { c.ManuallyStopped = true })
}

// startAgain starts a container that has ended, from the same bundle: the
// writable layer it left (the bundle keeps it), its volumes, its network
// joined again (the host ports it asked for; one the kernel picked is
// picked again) and a new log helper that takes monitor, the caller's
// monitor lock. With createOnly the container is made and not started
// (`start -a` starts it once attached). byPolicy counts the start as its
// restart policy's. On error the container is left as it was, with why in
// its record.
func (a *app) startAgain(ctx context.Context, r *ctrRecord, monitor *os.File, createOnly, byPolicy bool) (retErr error) {
	defer func() {
		if retErr != nil {
			updateCtr(context.WithoutCancel(ctx), r.ID, func(c *ctrRecord) { c.Error = "start again: " + retErr.Error() })
		}
	}()
	// What the last run's monitor could not remove (it was killed).
	if _, err := runtimecli.Inspect(runtimeState, r.ID); err == nil {
		if err := runtimeOp(a, "delete", "--force", r.ID); err != nil {
			return err
		}
	}
	if r.Network != nil {
		// The last run's monitor left the network unless it was killed
		// first: then its namespace is still there, or, after the host
		// stopped, gone with /run while the network's address store
		// still holds the container's address (a run that recorded no
		// end), which the join would find taken.
		_, err := os.Stat(r.Network.NetNS)
		if err == nil || r.ExitCode == nil && r.FinishedAt.IsZero() && !r.StartedAt.IsZero() {
			leaveBridge(ctx, r.ID, r.Network)
		}
	}
	spec, err := readBundleSpec(bundleDir(r.ID))
	if err != nil {
		return fmt.Errorf("container %s: its bundle: %w", r.Name, err)
	}
	var nw *ctrNetwork
	if r.Network != nil {
		unlock, err := filelock.Lock(ctx, filepath.Join(runtimeState, "ports.lock"), true)
		if err != nil {
			return err
		}
		nw, err = joinBridge(ctx, r.Network.reqs(), r.ID, r.Network.asked(), r.Network.Egress)
		unlock()
		if err != nil {
			return fmt.Errorf("container %s: %w", r.Name, err)
		}
		defer func() {
			if retErr != nil {
				leaveBridge(context.WithoutCancel(ctx), r.ID, nw)
			}
		}()
		// The container's /etc/hosts names its address, which may differ.
		if _, err := networkFiles(ctrDir(r.ID), spec.Hostname, nw.IP, r.NetFiles); err != nil {
			return err
		}
	}
	prev := *r
	rec, err := updateCtr(ctx, r.ID, func(c *ctrRecord) {
		c.Network = nw
		c.ExitCode, c.FinishedAt, c.Error = nil, time.Time{}, ""
		c.StartedAt, c.Detached, c.ManuallyStopped, c.Restarting, c.HostStopped = time.Now().UTC(), true, false, false, false
		if byPolicy {
			c.RestartCount++
			c.RestartBackoff = restartDelay(&prev)
		}
	})
	if err != nil {
		return err
	}
	for _, n := range nw.names() {
		if err := refreshHosts(ctx, n); err != nil {
			a.log.Warn("names on the network", "network", n, "err", err)
		}
	}
	if err := a.runDetached(ctx, rec, runOpts{tty: rec.Tty, interactive: rec.Interactive, createOnly: createOnly}, monitor); err != nil {
		updateCtr(context.WithoutCancel(ctx), r.ID, func(c *ctrRecord) {
			c.Network, c.ExitCode, c.FinishedAt, c.StartedAt = prev.Network, prev.ExitCode, prev.FinishedAt, prev.StartedAt
		})
		return fmt.Errorf("container %s: %w", r.Name, err)
	}
	return nil
}

func readBundleSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	return &s, json.Unmarshal(b, &s)
}

// startCtr is `lodge start` of one container: a created one starts; one
// that has ended starts again (its monitor's lock taken first); a running
// one is left as it is, as docker does.
func (a *app) startCtr(ctx context.Context, r *ctrRecord, createOnly bool) error {
	switch st, running := r.status(); {
	case running:
		if createOnly {
			return fmt.Errorf("container %s is running: attach to it with lodge attach", r.Name)
		}
		return nil
	case st == "created" || st == "creating":
		if createOnly {
			return nil
		}
		if err := runtimeOp(a, "start", r.ID); err != nil {
			return err
		}
		r.emit("start")
		_, err := updateCtr(ctx, r.ID, func(c *ctrRecord) { c.StartedAt = time.Now().UTC() })
		return err
	}
	if r.Restarting {
		markStopped(ctx, r) // its policy's pending start gives way to this one
	}
	monitor, err := takeMonitor(ctx, r, 30*time.Second)
	if err != nil {
		return err
	}
	defer monitor.Close() // the new log helper has its own
	if r, err = loadCtr(r.ID); err != nil {
		return err
	}
	if _, running := r.status(); running {
		return nil // started meanwhile by its policy
	}
	return a.startAgain(ctx, r, monitor, createOnly, false)
}

// restartOnPolicy is the end of a log helper's run: if the container's
// policy says so, it waits the policy's delay and starts the container
// again, handing monitor, the lock this helper holds, to the next helper.
// `lodge stop`, `kill` or `rm` during the delay cancel it.
func (a *app) restartOnPolicy(ctx context.Context, id string, monitor *os.File) {
	r, err := loadCtr(id)
	if err != nil || r.RestartPolicy == nil || !r.RestartPolicy.restarts(r) {
		return
	}
	delay := restartDelay(r)
	updateCtr(ctx, id, func(c *ctrRecord) { c.Restarting = true })
	// Cleared by the start, else here.
	notRestarting := func() { updateCtr(context.WithoutCancel(ctx), id, func(c *ctrRecord) { c.Restarting = false }) }
	a.log.Info("restart policy: starting the container again", "container", r.Name, "policy", r.RestartPolicy.Name,
		"exit_code", r.exitCode(), "restarts", r.RestartCount, "delay", delay)
	// The delay ends early, and the monitor with it (its lock freed),
	// once the container is removed or stopped: a `lodge start` meanwhile
	// (which marks it stopped first) need not wait out a long delay.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(delay); ; {
		if r, err = loadCtr(id); err != nil || !r.RestartPolicy.restarts(r) {
			notRestarting() // removed, or stopped, meanwhile
			return
		}
		if !time.Now().Before(end) {
			break
		}
		select {
		case <-ctx.Done():
			notRestarting()
			return
		case <-tick.C:
		}
	}
	if err := a.startAgain(ctx, r, monitor, false, true); err != nil {
		notRestarting()
		a.log.Warn("restart policy: the container could not start again", "container", r.Name, "err", err)
	}
}

// addRestartCommand adds `lodge restart`.
func addRestartCommand(root *cobra.Command, a *app) {
	var timeout int
	restart := &cobra.Command{
		Use:   "restart [-t SECONDS] CONTAINER...",
		Short: "stop containers (as lodge stop) and start them again",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachCtr(cmd, args, func(r *ctrRecord) error {
				if err := stopCtr(a, r, r.grace(cmd, timeout)); err != nil {
					return err
				}
				if err := a.startCtr(cmd.Context(), r, false); err != nil {
					return err
				}
				r.emit("restart")
				return nil
			})
		},
	}
	restart.Flags().IntVarP(&timeout, "time", "t", stopGrace, "seconds to wait for each to stop before SIGKILL")
	root.AddCommand(restart)
}
