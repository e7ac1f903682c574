package runtimecli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// cmdRun is `run [--bundle|-b DIR] ID`: create and start a container in its
// own VM, relay its stdio, and exit with its exit status.
func cmdRun(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) (retErr error) {
	fs := newFlagSet("run")
	bundleDir := "."
	fs.StringVar(&bundleDir, "bundle", ".", "bundle directory")
	fs.StringVar(&bundleDir, "b", ".", "bundle directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"run: expects exactly one container id"}
	}
	id := fs.Arg(0)
	if !transport.ValidID(id) {
		return usageError{fmt.Sprintf("run: invalid container id %q (letters, digits and _.+- only)", id)}
	}
	b, err := oci.LoadBundle(bundleDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(g.root, 0o711); err != nil {
		return fmt.Errorf("state root %s: %w", g.root, err)
	}
	henv, err := env.Resolve(log)
	if err != nil {
		return err
	}
	log = log.With("container_id", id)

	// Signals arriving before the container runs end the start-up.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopEarly := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			if s == syscall.SIGINT || s == syscall.SIGTERM {
				cancel()
			}
		case <-stopEarly:
		}
	}()

	sb, err := sandbox.Create(sctx, henv.Deps, henv.SandboxConfig(g.root, id))
	if err != nil {
		close(stopEarly)
		return err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if err := sb.Destroy(dctx); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	c, err := sb.CreateContainer(sctx, sandbox.ContainerConfig{
		ID: id, Spec: b.Spec, Rootfs: b.Rootfs,
		Stdio: sandbox.Stdio{Stdin: env.IO.In, Stdout: env.IO.Out, Stderr: env.IO.Err},
	})
	if err != nil {
		close(stopEarly)
		return err
	}
	if err := c.Start(sctx); err != nil {
		close(stopEarly)
		return err
	}
	close(stopEarly)
	go forwardSignals(ctx, log, c, sigs)

	es, err := c.Wait(ctx)
	if err != nil {
		return err
	}
	if err := c.Delete(ctx); err != nil {
		log.Warn("delete container", "err", err)
	}
	if es.Code != 0 {
		return exitCode(es.Code)
	}
	return nil
}

// forwardSignals relays what lodge-runtime receives to the container's init
// process, as runc does (SIGCHLD, SIGWINCH, SIGURG and SIGPIPE stay here).
func forwardSignals(ctx context.Context, log *slog.Logger, c *sandbox.Container, sigs <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-sigs:
			sig, ok := s.(syscall.Signal)
			if !ok || sig == syscall.SIGCHLD || sig == syscall.SIGWINCH || sig == syscall.SIGURG || sig == syscall.SIGPIPE {
				continue
			}
			if err := c.Signal(ctx, int(sig)); err != nil {
				log.Warn("forward signal", "signal", sig, "err", err)
			}
		}
	}
}
