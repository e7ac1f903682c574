package cli

// lodge compose up, down, run and exec, and the output of a project's
// containers.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/lodgeruntime/lodge/internal/compose"
)

type upOpts struct {
	detach, build, noBuild    bool
	forceRecreate, noRecreate bool
	removeOrphans, noDeps     bool
	abortOnExit, wait         bool
	watch                     bool // develop.watch while attached (up --watch)
	waitTimeout               int  // seconds
	pull, exitCodeFrom        string
	scale                     []string // --scale SERVICE=N
}

type downOpts struct {
	volumes, removeOrphans bool
	rmi                    string
	timeout                int
}

type composeLogOpts struct {
	follow, timestamps, noPrefix bool
	tail                         string
}

// warn prints a warning about the project.
func (c *composeCmd) warn(format string, args ...any) {
	fmt.Fprintf(c.cmd.ErrOrStderr(), "lodge compose: warning: "+format+"\n", args...)
}

// up makes what the services need and starts their containers, each
// service after those it depends on (and their conditions) are there.
func (c *composeCmd) up(o upOpts, services []string) error {
	if o.exitCodeFrom != "" {
		if _, ok := c.p.Services[o.exitCodeFrom]; !ok {
			return fmt.Errorf("--exit-code-from %s: no such service", o.exitCodeFrom)
		}
		o.abortOnExit = true
	}
	if o.wait {
		o.detach = true
	}
	if o.detach && o.abortOnExit {
		return errors.New("-d (or --wait) and --abort-on-container-exit (or --exit-code-from) do not go together")
	}
	var rules []*watchRule
	if o.watch {
		if o.detach {
			return errors.New("--watch and -d (or --wait) do not go together: lodge compose watch watches detached services")
		}
		var err error
		if rules, err = c.watchRules(services); err != nil {
			return err
		}
	}
	if !slices.Contains([]string{"missing", "always", "never"}, o.pull) {
		return fmt.Errorf("--pull %q: want missing, always or never", o.pull)
	}
	for _, sc := range o.scale {
		name, n, ok := strings.Cut(sc, "=")
		k, err := strconv.Atoi(n)
		s, known := c.p.Services[name]
		if !ok || err != nil || k < 0 || !known {
			return fmt.Errorf("--scale %q: want SERVICE=N, a service of the file and N of 0 or more", sc)
		}
		s.SetScale(k)
		c.p.Services[name] = s
	}
	order, err := compose.Order(c.p, services)
	if err != nil {
		return err
	}
	if o.noDeps && len(services) > 0 {
		order = slices.DeleteFunc(order, func(n string) bool { return !slices.Contains(services, n) })
	}
	// Everything is checked before anything is made.
	for _, n := range order {
		s := c.p.Services[n]
		if _, _, err := compose.RunArgs(c.p, s, compose.Container{Name: n}); err != nil {
			return err
		}
		if s.ContainerName != "" && s.GetScale() > 1 {
			return fmt.Errorf("service %s: container_name %s and %d replicas: a name is one container's", n, s.ContainerName, s.GetScale())
		}
	}
	if err := c.ensureNetworks(order); err != nil {
		return err
	}
	if err := c.ensureVolumes(order); err != nil {
		return err
	}
	if err := c.orphans(o.removeOrphans); err != nil {
		return err
	}
	names, err := c.upServices(order, func(s types.ServiceConfig) ([]string, error) { return c.upService(s, o) })
	if err != nil {
		return err
	}
	if o.wait {
		return c.waitUp(names, time.Duration(o.waitTimeout)*time.Second)
	}
	if o.detach {
		return nil
	}
	if rules != nil {
		ctx, stop := context.WithCancel(c.cmd.Context())
		watched := make(chan error, 1)
		go func() { watched <- c.watchLoop(ctx, rules) }()
		var err error
		for {
			// A rebuild makes a service's containers again, and the
			// old ones' output ends: follow the new ones.
			n := c.rebuilds.Load()
			if err = c.attach(names, o); err != nil || c.rebuilds.Load() == n {
				break
			}
			c.rebuilding.Lock()
			names = names[:0]
			for _, r := range projectCtrs(c.p.Name, false) {
				if _, running := r.status(); running {
					names = append(names, r.Name)
				}
			}
			c.rebuilding.Unlock()
			if len(names) == 0 {
				break
			}
		}
		stop()
		if werr := <-watched; err == nil && werr != nil {
			err = werr
		}
		return err
	}
	return c.attach(names, o)
}

// waitUp waits for the containers up started to be running, and healthy
// where they have a health check (up --wait).
func (c *composeCmd) waitUp(names []string, timeout time.Duration) error {
	ctx := c.cmd.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	for _, n := range names {
		r := ctrByName(n)
		if r == nil {
			return fmt.Errorf("container %s is gone", n)
		}
		if r.healthcheck() == nil {
			// A one-shot job others wait on may have ended, with 0.
			if st, running := r.status(); !running && st != "paused" && !(r.exitCode() == 0 && c.awaitedToComplete(r.Labels[compose.LabelService])) {
				return fmt.Errorf("container %s is not running (exit %d; lodge logs %s)", n, r.exitCode(), n)
			}
			continue
		}
		if err := c.waitHealthy(ctx, r.Labels[compose.LabelService], n); err != nil {
			if ctx.Err() != nil && c.cmd.Context().Err() == nil {
				return fmt.Errorf("container %s: not healthy within --wait-timeout %v", n, timeout)
			}
			return err
		}
	}
	return nil
}

// dependentsFirst runs f for each container, those of services others
// depend on after those others, and the containers of one level at once
// (as docker compose stops them: each may take its stop timeout).
func (c *composeCmd) dependentsFirst(ctrs []*ctrRecord, f func(*ctrRecord) error) []error {
	depth := map[string]int{}
	var level func(svc string, seen map[string]bool) int
	level = func(svc string, seen map[string]bool) int {
		if d, ok := depth[svc]; ok {
			return d
		}
		d := 0
		if s, ok := c.p.Services[svc]; ok && !seen[svc] {
			seen[svc] = true
			for dep := range s.DependsOn {
				d = max(d, level(dep, seen)+1)
			}
		}
		depth[svc] = d
		return d
	}
	byLevel := map[int][]*ctrRecord{}
	for _, r := range ctrs {
		l := level(r.Labels[compose.LabelService], map[string]bool{})
		byLevel[l] = append(byLevel[l], r)
	}
	var errs []error
	for _, l := range slices.Backward(slices.Sorted(maps.Keys(byLevel))) {
		for _, err := range atOnce(byLevel[l], f) {
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// awaitedToComplete says whether a service depends on svc with
// service_completed_successfully.
func (c *composeCmd) awaitedToComplete(svc string) bool {
	for _, s := range c.p.Services {
		if d, ok := s.DependsOn[svc]; ok && d.Condition == types.ServiceConditionCompletedSuccessfully {
			return true
		}
	}
	return false
}

// upContainer makes or starts one container, or leaves it running when
// nothing it was made from changed.
func (c *composeCmd) upContainer(s types.ServiceConfig, ct compose.Container, o upOpts) error {
	if r := ctrByName(ct.Name); r != nil {
		if r.Labels[compose.LabelProject] != c.p.Name {
			return fmt.Errorf("service %s: the container name %s is taken by a container of no project here: remove or rename it", s.Name, ct.Name)
		}
		if r.Labels[compose.LabelConfigHash] == ct.Hash && !o.forceRecreate || o.noRecreate {
			if st, running := r.status(); running || st == "paused" {
				fmt.Fprintf(c.cmd.ErrOrStderr(), " ✔ Container %s  Running\n", ct.Name)
				return nil
			}
			if err := c.step("Container", ct.Name, "Started", "start", ct.Name); err != nil {
				return err
			}
			return c.hooks(s, ct.Name, s.PostStart, "post_start")
		}
		// Its anonymous volumes go to the container that replaces it, as
		// docker compose carries them over (a database's data in the
		// image's VOLUME); those the new one does not take go after it.
		fmt.Fprintf(c.cmd.ErrOrStderr(), " ⠿ Container %s  Recreate\n", ct.Name)
		ct.Anonymous = anonymousVolumes(r)
		if err := c.remove(r, false, -1); err != nil {
			return err
		}
	}
	args, warnings, err := compose.RunArgs(c.p, s, ct)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		c.warn("%s", w)
	}
	if err := c.step("Container", ct.Name, "Started", append([]string{"run"}, args...)...); err != nil {
		return err
	}
	if ct.Detach {
		if err := c.hooks(s, ct.Name, s.PostStart, "post_start"); err != nil {
			return err
		}
	}
	if len(ct.Anonymous) > 0 {
		var taken []string
		if nr := ctrByName(ct.Name); nr != nil {
			taken = nr.Volumes
		}
		for _, v := range ct.Anonymous {
			if !slices.Contains(taken, v) {
				removeAnonymous([]string{v}, "")
			}
		}
	}
	return nil
}

// anonymousVolumes are a container's anonymous volumes by the path each
// is mounted at.
func anonymousVolumes(r *ctrRecord) map[string]string {
	out := map[string]string{}
	for _, p := range volumeMountsOf(r) {
		if strings.HasPrefix(p.Name, "anon-") {
			out[p.Destination] = p.Name
		}
	}
	return out
}

// hooks runs a service's post_start or pre_stop hooks in its container
// name, as docker compose runs them (a hook that fails is an error).
func (c *composeCmd) hooks(s types.ServiceConfig, name string, hs []types.ServiceHook, kind string) error {
	for _, h := range hs {
		args, err := compose.HookArgs(h, name)
		if err != nil {
			return fmt.Errorf("service %s: %s: %w", s.Name, kind, err)
		}
		if err := c.step("Container", name, kind+" hook done", append([]string{"exec"}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// preStop runs the pre_stop hooks of a running container's service.
func (c *composeCmd) preStop(r *ctrRecord) error {
	s, ok := c.p.Services[r.Labels[compose.LabelService]]
	if _, running := r.status(); !ok || !running || len(s.PreStop) == 0 {
		return nil
	}
	return c.hooks(s, r.Name, s.PreStop, "pre_stop")
}

// ctrByName is the container of that exact name (nil: none).
func ctrByName(name string) *ctrRecord {
	all, _ := allCtrs()
	for _, r := range all {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// remove stops a container (its stop signal, then SIGKILL after timeout
// seconds; -1: its own) and removes it, with its anonymous volumes if
// asked.
func (c *composeCmd) remove(r *ctrRecord, volumes bool, timeout int) error {
	if _, running := r.status(); running {
		if err := c.preStop(r); err != nil {
			return err
		}
	}
	if st, running := r.status(); running || st == "paused" {
		args := []string{"stop"}
		if timeout >= 0 {
			args = append(args, "-t", strconv.Itoa(timeout))
		}
		if err := c.step("Container", r.Name, "Stopped", append(args, r.Name)...); err != nil {
			return err
		}
	}
	args := []string{"rm", "-f"}
	if volumes {
		args = append(args, "-v")
	}
	return c.step("Container", r.Name, "Removed", append(args, r.Name)...)
}

// orphans are the project's containers of services the file no longer
// has (services a profile leaves out are not orphans).
func (c *composeCmd) orphans(remove bool) error {
	var names []string
	for _, r := range projectCtrs(c.p.Name, false) {
		svc := r.Labels[compose.LabelService]
		if _, ok := c.p.Services[svc]; ok || slices.Contains(c.p.DisabledServiceNames(), svc) {
			continue
		}
		if remove {
			if err := c.remove(r, false, -1); err != nil {
				return err
			}
			continue
		}
		names = append(names, r.Name)
	}
	if len(names) > 0 {
		c.warn("containers of services this file no longer has: %s (--remove-orphans removes them)", strings.Join(names, ", "))
	}
	return nil
}

// ensureNetworks makes the project's networks the services use (an
// external one must exist).
func (c *composeCmd) ensureNetworks(order []string) error {
	done := map[string]bool{}
	for _, n := range order {
		s := c.p.Services[n]
		if s.NetworkMode != "" {
			continue
		}
		for _, key := range slices.Sorted(maps.Keys(s.Networks)) {
			nw := c.p.Networks[key]
			if done[nw.Name] {
				continue
			}
			done[nw.Name] = true
			if _, err := os.Stat(networkPath(nw.Name)); err == nil {
				continue
			}
			if nw.External {
				return fmt.Errorf("network %s is external, but lodge has no network %s (lodge network create %s)", key, nw.Name, nw.Name)
			}
			args := []string{"network", "create"}
			if sub := compose.Subnet(nw); sub != "" {
				args = append(args, "--subnet", sub)
			}
			if nw.Internal {
				args = append(args, "--internal")
			}
			for _, k := range slices.Sorted(maps.Keys(nw.DriverOpts)) {
				if k == iccOption {
					args = append(args, "-o", k+"="+nw.DriverOpts[k])
				} else {
					c.warn("network %s: driver_opts %s: lodge's bridge networks have no such option (left out)", key, k)
				}
			}
			if err := c.step("Network", nw.Name, "Created", append(args, nw.Name)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureVolumes makes the project's named volumes the services use (an
// external one must exist).
func (c *composeCmd) ensureVolumes(order []string) error {
	done := map[string]bool{}
	for _, n := range order {
		for _, v := range c.p.Services[n].Volumes {
			if v.Type != types.VolumeTypeVolume || v.Source == "" {
				continue
			}
			vol := c.p.Volumes[v.Source]
			if done[vol.Name] {
				continue
			}
			done[vol.Name] = true
			if volumeExists(vol.Name) {
				continue
			}
			if vol.External {
				return fmt.Errorf("volume %s is external, but lodge has no volume %s (lodge volume create %s)", v.Source, vol.Name, vol.Name)
			}
			// Labelled as docker compose labels its volumes, and with the
			// file's own labels.
			args := []string{"volume", "create", "--label", compose.LabelProject + "=" + c.p.Name, "--label", "com.docker.compose.volume=" + v.Source}
			for _, k := range slices.Sorted(maps.Keys(vol.Labels)) {
				args = append(args, "--label", k+"="+vol.Labels[k])
			}
			if err := c.step("Volume", vol.Name, "Created", append(args, vol.Name)...); err != nil {
				return err
			}
		}
	}
	return nil
}

func volumeExists(name string) bool {
	_, err := os.Stat(filepath.Join(volumesDir, name, "volume.json"))
	return err == nil
}

// waitDeps waits for the conditions of what s depends on: a healthy
// container (as its monitor finds it), or one that ended with 0.
func (c *composeCmd) waitDeps(s types.ServiceConfig) error {
	for _, d := range slices.Sorted(maps.Keys(s.DependsOn)) {
		dep := s.DependsOn[d]
		ds, ok := c.p.Services[d]
		if !ok {
			continue
		}
		ctrs, _ := c.containers([]string{d}, false)
		if len(ctrs) == 0 {
			if dep.Required {
				return fmt.Errorf("service %s depends on %s, which has no container (lodge compose up %s)", s.Name, d, d)
			}
			continue
		}
		for _, r := range ctrs {
			switch dep.Condition {
			case types.ServiceConditionHealthy:
				if err := c.waitHealthy(c.cmd.Context(), ds.Name, r.Name); err != nil {
					return fmt.Errorf("service %s depends on %s: %w", s.Name, d, err)
				}
			case types.ServiceConditionCompletedSuccessfully:
				var out bytes.Buffer
				code, err := c.lodge(nil, &out, io.Discard, "wait", r.Name)
				if err != nil {
					return err
				}
				exit, _ := strconv.Atoi(strings.TrimSpace(out.String()))
				if code != 0 || exit != 0 {
					return fmt.Errorf("service %s depends on %s completing successfully: container %s exited with %d", s.Name, d, r.Name, exit)
				}
				fmt.Fprintf(c.cmd.ErrOrStderr(), " ✔ Container %s  Exited\n", r.Name)
			}
		}
	}
	return nil
}

// waitHealthy waits for a container's health check, which its monitor
// runs (health.go), to pass; an unhealthy or ended container is an error.
func (c *composeCmd) waitHealthy(ctx context.Context, service, name string) error {
	r := ctrByName(name)
	if r == nil {
		return fmt.Errorf("container %s is gone", name)
	}
	hc := r.healthcheck()
	if hc == nil {
		return fmt.Errorf("condition service_healthy, but %s has no healthcheck (in the Compose file or its image)", service)
	}
	fmt.Fprintf(c.cmd.ErrOrStderr(), " ⠿ Container %s  Waiting\n", name)
	for {
		r := ctrByName(name)
		if r == nil {
			return fmt.Errorf("container %s was removed before it was healthy", name)
		}
		st, running := r.status()
		if !running && st != "paused" {
			return fmt.Errorf("container %s ended (exit %d) before it was healthy (lodge logs %s)", name, r.exitCode(), name)
		}
		switch h := r.health(); {
		case h != nil && h.Status == "healthy":
			fmt.Fprintf(c.cmd.ErrOrStderr(), " ✔ Container %s  Healthy\n", name)
			return nil
		case h != nil && h.Status == "unhealthy":
			last := ""
			if len(h.Log) > 0 {
				p := h.Log[len(h.Log)-1]
				last = fmt.Sprintf(": the last check exited %d: %q", p.ExitCode, strings.TrimSpace(p.Output))
			}
			return fmt.Errorf("container %s is unhealthy%s", name, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// attach follows the containers' output until they end, as docker
// compose up without -d: an interrupt stops them (a second one leaves
// them), and with --abort-on-container-exit the first to end stops the
// others.
func (c *composeCmd) attach(names []string, o upOpts) error {
	var ctrs []*ctrRecord
	for _, n := range names {
		if r := ctrByName(n); r != nil {
			ctrs = append(ctrs, r)
		}
	}
	fmt.Fprintf(c.cmd.ErrOrStderr(), "Attaching to %s\n", strings.Join(names, ", "))
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ended := make(chan string, len(ctrs))
	done := make(chan error, 1)
	logCtx, cancelLogs := context.WithCancel(context.WithoutCancel(c.cmd.Context()))
	defer cancelLogs()
	go func() { done <- c.followLogs(logCtx, ctrs, composeLogOpts{follow: true, tail: "all"}, ended) }()
	var stopping sync.Once
	stopAll := func(why string) {
		stopping.Do(func() {
			fmt.Fprintln(c.cmd.ErrOrStderr(), why)
			go c.dependentsFirst(ctrs, func(r *ctrRecord) error {
				c.preStop(r)
				_, err := c.lodge(nil, io.Discard, io.Discard, "stop", r.Name)
				return err
			})
		})
	}
	interrupted := false
	for {
		select {
		case n := <-ended:
			if o.abortOnExit {
				stopAll(fmt.Sprintf("%s exited: stopping the others", n))
			}
		case <-sigs:
			if interrupted {
				cancelLogs()
				return exitError{code: 130, err: errors.New("interrupted: containers left as they are")}
			}
			interrupted = true
			stopAll("Gracefully stopping... (press Ctrl+C again to force)")
		case err := <-done:
			if err != nil {
				return err
			}
			if interrupted {
				return exitError{code: 130}
			}
			if o.exitCodeFrom != "" {
				for _, r := range ctrs {
					if r.Labels[compose.LabelService] == o.exitCodeFrom {
						if fresh, err := loadCtr(r.ID); err == nil {
							if code := fresh.exitCode(); code != 0 {
								return exitError{code: code}
							}
						}
						break
					}
				}
			}
			return nil
		}
	}
}

// followLogs prints the containers' output, each line after its
// container's name; a container's name goes to ended once its output
// has (with -f: once it ended).
func (c *composeCmd) followLogs(ctx context.Context, ctrs []*ctrRecord, lo composeLogOpts, ended chan<- string) error {
	width := 0
	for _, r := range ctrs {
		width = max(width, len(r.Name))
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := c.cmd.OutOrStdout()
	for _, r := range ctrs {
		prefix := ""
		if !lo.noPrefix {
			prefix = fmt.Sprintf("%-*s | ", width, r.Name)
		}
		args := []string{"logs", "--tail", lo.tail}
		if lo.follow {
			args = append(args, "-f")
		}
		if lo.timestamps {
			args = append(args, "-t")
		}
		stdout := &prefixWriter{mu: &mu, w: out, prefix: prefix}
		stderr := &prefixWriter{mu: &mu, w: out, prefix: prefix}
		cmd := exec.CommandContext(ctx, c.self, append(args, r.ID)...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		// Its own process group: a terminal's ^C is for lodge compose,
		// which stops the containers, whose output then ends.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd.Wait()
			stdout.flush()
			stderr.flush()
			if ended != nil {
				ended <- r.Name
			}
		}()
	}
	wg.Wait()
	return nil
}

// prefixWriter writes whole lines, each after prefix, under mu.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.mu.Lock()
		_, err := fmt.Fprintf(p.w, "%s%s", p.prefix, p.buf[:i+1])
		p.mu.Unlock()
		p.buf = p.buf[i+1:]
		if err != nil {
			return len(b), err
		}
	}
}

func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		p.Write([]byte("\n"))
	}
}

// down removes the project's containers (last started first), its
// networks and, if asked, its volumes and images.
func (c *composeCmd) down(o downOpts) error {
	if o.rmi != "" && o.rmi != "local" && o.rmi != "all" {
		return fmt.Errorf("--rmi %q: want local or all", o.rmi)
	}
	ctrs, err := c.containers(nil, true)
	if err != nil {
		return err
	}
	var errs, orphans []string
	ctrs = slices.DeleteFunc(ctrs, func(r *ctrRecord) bool {
		svc := r.Labels[compose.LabelService]
		if _, ok := c.p.Services[svc]; !ok && !slices.Contains(c.p.DisabledServiceNames(), svc) && !o.removeOrphans {
			orphans = append(orphans, r.Name)
			return true
		}
		return false
	})
	for _, err := range c.dependentsFirst(ctrs, func(r *ctrRecord) error { return c.remove(r, o.volumes, o.timeout) }) {
		errs = append(errs, err.Error())
	}
	if len(orphans) > 0 {
		c.warn("containers of services this file no longer has: %s (--remove-orphans removes them)", strings.Join(orphans, ", "))
	}
	for _, key := range slices.Sorted(maps.Keys(c.p.Networks)) {
		nw := c.p.Networks[key]
		if _, err := os.Stat(networkPath(nw.Name)); err != nil || bool(nw.External) {
			continue
		}
		if err := c.step("Network", nw.Name, "Removed", "network", "rm", nw.Name); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if o.volumes {
		for _, key := range slices.Sorted(maps.Keys(c.p.Volumes)) {
			vol := c.p.Volumes[key]
			if bool(vol.External) || !volumeExists(vol.Name) {
				continue
			}
			if err := c.step("Volume", vol.Name, "Removed", "volume", "rm", vol.Name); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if o.rmi != "" {
		for _, n := range slices.Sorted(maps.Keys(c.p.Services)) {
			s := c.p.Services[n]
			if name := compose.Image(c.p, s); (o.rmi == "all" || s.Image == "") && c.imageID(name) != "" {
				if err := c.step("Image", name, "Removed", "rmi", name); err != nil {
					errs = append(errs, err.Error())
				}
			}
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
