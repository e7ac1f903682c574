package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// warmUpID names the container WarmUp makes; it is gone before any host
// connects, so no host's container can meet it.
const warmUpID = "lodge-warm-up"

// warmedUpFile records, in the guest, that WarmUp ran (and how long it
// took): a clone's guest has it from its template.
const warmedUpFile = "/run/lodge/warmed-up"

// WarmUp creates a container and destroys it without starting it, before
// a template's snapshot: what a guest does once, for its first container
// (its kernel's first container namespaces, mounts, devpts and mqueue
// instances and cgroups, the first runc init), is then done in the
// template, and every clone's first container finds it done. directInit
// is lodge-init's path ("" when the agent makes no direct containers). The container
// has the runtime-spec's default namespaces and mounts, an empty root of
// its own in the guest's tmpfs and a program that never runs; nothing of
// it is left (state, cgroup, root), and it derives nothing a clone uses as
// an identity. With seccomp (an agent built with it) the container has
// docker's default profile, the one `lodge run` gives its containers, so
// the template compiles it once and no clone compiles it again (the
// profile is the agent's build's, which the template's key covers). It
// must run before the agent serves: it is not reaped by the agent's
// reaper.
func WarmUp(log *slog.Logger, stateDir, directInit string, seccomp bool) (err error) {
	start := time.Now()
	dir, err := os.MkdirTemp("", warmUpID+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return err
	}
	// runc init checks that the program exists before it waits to be
	// started; it is never started.
	if err := os.WriteFile(filepath.Join(rootfs, "noop"), nil, 0o755); err != nil {
		return err
	}
	spec := oci.DefaultSpec()
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/noop"}
	spec.Root = &specs.Root{Path: rootfs}
	spec.Hostname = warmUpID
	spec.Linux.CgroupsPath = "/lodge/" + warmUpID
	if seccomp {
		if spec.Linux.Seccomp, err = oci.DockerSeccomp(oci.DockerCaps); err != nil {
			return fmt.Errorf("warm-up seccomp profile: %w", err)
		}
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: warmUpID, Spec: spec})
	if err != nil {
		return fmt.Errorf("warm-up config: %w", err)
	}
	lp, err := newProcess(spec.Process)
	if err != nil {
		return err
	}
	lp.Init = true
	// The way the clones' containers will be made: direct, unless the
	// agent makes none.
	var (
		r      runner
		launch starter
	)
	if plan, why := planDirect(warmUpID, cfg, lp); plan != nil && directInit != "" {
		d, err := newDirect(directInit, warmUpID, cfg, plan)
		if err != nil {
			return fmt.Errorf("warm-up create: %w", err)
		}
		r, launch = d, d.startInit
	} else {
		if plan == nil {
			log.Warn("warm-up container through libcontainer", "why", why)
		}
		lc, err := libcontainer.Create(stateDir, warmUpID, cfg)
		if err != nil {
			return fmt.Errorf("warm-up create: %w", err)
		}
		r, launch = lcContainer{lc}, viaLibcontainer(lc.Start)
	}
	proc, _, err := launch(lp)
	if err != nil {
		err = fmt.Errorf("warm-up start: %w", err)
	}
	// Destroy kills the init waiting to be started; then it is reaped.
	if derr := r.Destroy(); derr != nil && err == nil {
		err = fmt.Errorf("warm-up destroy: %w", derr)
	}
	if proc != nil {
		proc.Wait() //nolint:errcheck // killed
	}
	if err == nil {
		took := time.Since(start).Round(time.Millisecond)
		log.Info("warm-up container made", "took", took)
		// What the template did, for whoever inspects a clone's guest.
		// (A direct warm-up, unlike libcontainer's, makes no state
		// directory under /run/lodge.)
		if err = os.MkdirAll(filepath.Dir(warmedUpFile), 0o755); err == nil {
			err = os.WriteFile(warmedUpFile, []byte("warm-up container made in "+took.String()+"\n"), 0o444)
		}
	}
	return err
}
