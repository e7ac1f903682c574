package cli

// Health checks, as docker's: the image's HEALTHCHECK or run's --health-*
// flags name a command that the container's monitor (its log helper, or
// a foreground run) runs in the container with lodge exec at each
// interval while the container runs. Its verdicts go to health.json in
// the container's directory: starting, then healthy after a pass, or
// unhealthy after `retries` failures in a row (failures within the start
// period do not count until a first pass). lodge ps shows it beside the
// status, inspect as State.Health, and lodge compose waits on it for
// depends_on's service_healthy. No daemon runs the checks: with no
// monitor (a container whose helper was killed) no check runs.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/pflag"

	"github.com/lodgeruntime/lodge/internal/state"
)

// Docker's defaults for what a healthcheck leaves out.
const (
	healthInterval      = 30 * time.Second
	healthTimeout       = 30 * time.Second
	healthRetries       = 3
	healthStartInterval = 5 * time.Second
	healthLogEntries    = 5
	healthOutputMax     = 4096
)

// healthOpts are run's --health-* flags.
type healthOpts struct {
	cmd                            string
	interval, timeout, startPeriod time.Duration
	retries                        int
	none                           bool
}

func addHealthFlags(f *pflag.FlagSet, o *healthOpts) {
	f.StringVar(&o.cmd, "health-cmd", "", "a command to check the container's health, run by /bin/sh -c (or a JSON array, run as it is)")
	f.DurationVar(&o.interval, "health-interval", 0, "time between checks (default 30s)")
	f.DurationVar(&o.timeout, "health-timeout", 0, "longest a check may run (default 30s)")
	f.IntVar(&o.retries, "health-retries", 0, "failures in a row that make it unhealthy (default 3)")
	f.DurationVar(&o.startPeriod, "health-start-period", 0, "time to start in, whose failures do not count")
	f.BoolVar(&o.none, "no-healthcheck", false, "no health check, not even the image's")
}

// apply puts the flags into the container's config (the image's check,
// changed or replaced, as docker's).
func (o healthOpts) apply(c *v1.Config) error {
	if o.none {
		c.Healthcheck = &v1.HealthConfig{Test: []string{"NONE"}}
		return nil
	}
	for _, d := range []time.Duration{o.interval, o.timeout, o.startPeriod} {
		if d < 0 {
			return errors.New("--health-*: durations must not be negative")
		}
	}
	if o.retries < 0 {
		return errors.New("--health-retries: must not be negative")
	}
	if o.cmd == "" && o.interval == 0 && o.timeout == 0 && o.retries == 0 && o.startPeriod == 0 {
		return nil
	}
	h := v1.HealthConfig{}
	if c.Healthcheck != nil {
		h = *c.Healthcheck
	}
	if o.cmd != "" {
		var argv []string
		if strings.HasPrefix(strings.TrimSpace(o.cmd), "[") && json.Unmarshal([]byte(o.cmd), &argv) == nil && len(argv) > 0 {
			h.Test = append([]string{"CMD"}, argv...)
		} else {
			h.Test = []string{"CMD-SHELL", o.cmd}
		}
	}
	if len(h.Test) == 0 {
		return errors.New("--health-*: there is no check to time: give --health-cmd (the image has no HEALTHCHECK)")
	}
	if o.interval > 0 {
		h.Interval = o.interval
	}
	if o.timeout > 0 {
		h.Timeout = o.timeout
	}
	if o.startPeriod > 0 {
		h.StartPeriod = o.startPeriod
	}
	if o.retries > 0 {
		h.Retries = o.retries
	}
	c.Healthcheck = &h
	return nil
}

// healthcheck is the container's check (nil: none). In the start period
// it runs every 5 s (docker's default start interval) until a first pass.
func (r *ctrRecord) healthcheck() *v1.HealthConfig {
	if r.Config == nil || r.Config.Healthcheck == nil || len(r.Config.Healthcheck.Test) == 0 || r.Config.Healthcheck.Test[0] == "NONE" {
		return nil
	}
	return r.Config.Healthcheck
}

// healthArgv is the command a check runs.
func healthArgv(test []string) ([]string, error) {
	switch {
	case test[0] == "CMD" && len(test) > 1:
		return test[1:], nil
	case test[0] == "CMD-SHELL" && len(test) == 2:
		return []string{"/bin/sh", "-c", test[1]}, nil
	}
	return nil, fmt.Errorf("healthcheck %q: want CMD ARGS... or CMD-SHELL COMMAND", test)
}

// healthState is State.Health in docker's shape.
type healthState struct {
	Status        string        `json:"Status"` // starting, healthy, unhealthy
	FailingStreak int           `json:"FailingStreak"`
	Log           []healthProbe `json:"Log"`
}

type healthProbe struct {
	Start    time.Time `json:"Start"`
	End      time.Time `json:"End"`
	ExitCode int       `json:"ExitCode"`
	Output   string    `json:"Output"`
}

// healthFile keeps the verdicts of the container's current run.
type healthFile struct {
	healthState
	Run time.Time `json:"run"`
}

func healthPath(id string) string { return filepath.Join(ctrDir(id), "health.json") }

// health is the container's health now (nil: no check, or not running).
func (r *ctrRecord) health() *healthState {
	if r.healthcheck() == nil {
		return nil
	}
	if _, running := r.status(); !running {
		return nil
	}
	var f healthFile
	if err := state.Read(healthPath(r.ID), &f); err != nil || !f.Run.Equal(r.StartedAt) {
		return &healthState{Status: "starting"}
	}
	return &f.healthState
}

// watchHealth runs the container's check while ctx lasts (its monitor's
// watch of one run), writing each verdict.
func (a *app) watchHealth(ctx context.Context, id string) {
	r, err := loadCtr(id)
	if err != nil {
		return
	}
	hc := r.healthcheck()
	if hc == nil {
		return
	}
	argv, err := healthArgv(hc.Test)
	if err != nil {
		a.log.Warn("no health check", "container", r.Name, "err", err)
		return
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	dflt := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	interval, timeout := dflt(hc.Interval, healthInterval), dflt(hc.Timeout, healthTimeout)
	retries := hc.Retries
	if retries <= 0 {
		retries = healthRetries
	}
	f := healthFile{healthState: healthState{Status: "starting", Log: []healthProbe{}}, Run: r.StartedAt}
	state.Write(healthPath(id), f)
	begin := time.Now()
	// In the start period, until a first pass: checks every 5 s, whose
	// failures do not count.
	starting := func() bool { return f.Status == "starting" && time.Since(begin) < hc.StartPeriod }
	for {
		wait := interval
		if starting() {
			wait = healthStartInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if cur, err := loadCtr(id); err != nil {
			return
		} else if st, running := cur.status(); !running || st == "paused" {
			continue // docker checks no paused container
		}
		p := probe(ctx, self, id, argv, timeout)
		if ctx.Err() != nil {
			return
		}
		f.Log = append(f.Log, p)
		if len(f.Log) > healthLogEntries {
			f.Log = f.Log[len(f.Log)-healthLogEntries:]
		}
		was := f.Status
		switch {
		case p.ExitCode == 0:
			f.Status, f.FailingStreak = "healthy", 0
		case starting():
			// Not counted.
		default:
			if f.FailingStreak++; f.FailingStreak >= retries {
				f.Status = "unhealthy"
			}
		}
		if err := state.Write(healthPath(id), f); err != nil {
			a.log.Warn("health", "container", r.Name, "err", err)
		}
		if f.Status != was {
			r.emit("health_status: " + f.Status)
		}
	}
}

// probe runs one check in the container with lodge exec.
func probe(ctx context.Context, self, id string, argv []string, timeout time.Duration) healthProbe {
	p := healthProbe{Start: time.Now().UTC()}
	cctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, self, append([]string{"exec", "--timeout", timeout.String(), id}, argv...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	p.End = time.Now().UTC()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		p.ExitCode = ee.ExitCode()
	default:
		p.ExitCode, out = -1, *bytes.NewBufferString(err.Error())
	}
	if p.ExitCode == 137 && p.End.Sub(p.Start) >= timeout {
		p.ExitCode, out = -1, *bytes.NewBufferString(fmt.Sprintf("Health check exceeded timeout (%v)", timeout))
	}
	o := out.String()
	if len(o) > healthOutputMax {
		o = o[:healthOutputMax]
	}
	p.Output = o
	return p
}

// healthSuffix is what ps adds to a running container's status.
func (r *ctrRecord) healthSuffix() string {
	h := r.health()
	switch {
	case h == nil:
		return ""
	case h.Status == "starting":
		return " (health: starting)"
	}
	return " (" + h.Status + ")"
}
