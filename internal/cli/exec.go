package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/state"
)

// execOpts are lodge exec's flags.
type execOpts struct {
	interactive, tty, detach bool
	env                      []string
	workdir, user            string
	timeout                  time.Duration // --timeout: SIGKILL after this long (0: none)
}

func (a *app) exec(cmd *cobra.Command, o execOpts, name string, args []string) error {
	r, err := findCtr(name)
	if err != nil {
		return lodgeError(err)
	}
	if _, running := r.status(); !running {
		return lodgeError(fmt.Errorf("container %s is not running", r.Name))
	}
	if o.timeout < 0 || o.timeout > 0 && o.detach {
		return lodgeError(errors.New("exec --timeout: a positive duration, and not with -d (a detached command has no one to wait for it)"))
	}
	rargs := []string{"exec"}
	if o.tty && !o.detach {
		rargs = append(rargs, "-t")
	}
	if o.detach {
		// Its output goes nowhere, as docker's exec -d.
		rargs = append(rargs, "-d")
		for _, f := range []**os.File{&os.Stdout, &os.Stderr} {
			restore, err := swapStdio(f, os.DevNull, os.O_WRONLY)
			if err != nil {
				return lodgeError(err)
			}
			defer restore()
		}
		o.interactive = false
	}
	for _, e := range o.env {
		if !strings.Contains(e, "=") {
			// NAME alone: this process's value (none: not set), as
			// docker's exec; the value is on no command line.
			v, ok := os.LookupEnv(e)
			if !ok {
				continue
			}
			e += "=" + v
		}
		rargs = append(rargs, "--env", e)
	}
	if o.workdir != "" {
		rargs = append(rargs, "--cwd", o.workdir)
	}
	if o.user != "" {
		// Names are the image's, as for run -u (the runtime takes numbers).
		var bl layers.BundleLayers
		if err := state.Read(filepath.Join(bundleDir(r.ID), layers.BundleFile), &bl); err != nil {
			return lodgeError(fmt.Errorf("container %s: its layers: %w", r.Name, err))
		}
		u, err := resolveUser(o.user, bl.Images)
		if err != nil {
			return lodgeError(err)
		}
		rargs = append(rargs, "--user", fmt.Sprintf("%d:%d", u.UID, u.GID))
		for _, g := range u.AdditionalGids {
			rargs = append(rargs, "--additional-gids", strconv.FormatUint(uint64(g), 10))
		}
	}
	rargs = append(append(rargs, r.ID), args...)
	if !o.interactive {
		restore, err := swapStdio(&os.Stdin, os.DevNull, os.O_RDONLY)
		if err != nil {
			return lodgeError(err)
		}
		defer restore()
	}
	ctx := cmd.Context()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	line := strings.Join(args, " ")
	r.emit("exec_start: "+line, "execCommand", line)
	code, msg := a.runtime(ctx, os.Stdout, rargs...)
	if !o.detach {
		r.emit("exec_die", "execCommand", line, "exitCode", strconv.Itoa(code))
	}
	if ctx.Err() != nil && cmd.Context().Err() == nil {
		fmt.Fprintf(a.env.Err, "lodge: exec: %s killed after %v (--timeout)\n", args[0], o.timeout)
	}
	if code != 0 && msg != "" {
		// lodge-runtime's own failure (the command never ran).
		return exitError{code: runExitCode(errors.New(msg)), err: errors.New(msg)}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}
