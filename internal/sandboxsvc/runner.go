package sandboxsvc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Label marks the containers the service made; its value is the sandbox
// ID.
const Label = "io.lodge.sandbox"

// holdSeconds is how long a sandbox's own process sleeps: for ever, as far
// as anyone waits (the service's deadline ends the sandbox first).
const holdSeconds = "2147483647"

// Runner makes, enters and removes the containers sandboxes are.
type Runner interface {
	// Create makes and starts the container named c.Name, running until
	// removed, and returns its address on its network ("" with none).
	Create(ctx context.Context, c CreateArgs) (ip string, err error)
	// Exec runs x in the container and returns its exit code; an error
	// means it could not be run.
	Exec(ctx context.Context, name string, x ExecArgs) (int, error)
	// SetTimeout makes the container's monitor stop it d from now.
	SetTimeout(ctx context.Context, name string, d time.Duration) error
	// Remove removes the container, ending it first.
	Remove(ctx context.Context, name string) error
	// List returns the containers that carry Label.
	List(ctx context.Context) ([]Container, error)
}

// CreateArgs is a sandbox's container.
type CreateArgs struct {
	Name, Image, Network, Memory string
	CPUs                         float64
	Env                          []string // NAME=VALUE
	// Pull: the image may be pulled if it is not in lodge's store.
	Pull bool
	// Timeout: its monitor stops it (and, it being --rm, removes it) this
	// long after it starts, whether or not the service still runs.
	Timeout time.Duration
}

// ExecArgs is one command in a sandbox.
type ExecArgs struct {
	Argv           []string
	Env            []string // NAME=VALUE
	Dir, User      string
	Timeout        time.Duration // SIGKILL in the guest after this long
	Stdin          io.Reader     // nil: none
	Stdout, Stderr io.Writer
}

// Container is one of the service's containers as lodge lists it.
type Container struct {
	Name, State string
}

// LodgeRunner runs the lodge command line, one process per call.
type LodgeRunner struct {
	// Bin is the lodge executable.
	Bin string
}

func (l LodgeRunner) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, l.Bin, args...)
	// A call whose caller went away ends as lodge ends on SIGTERM (an
	// exec hands it to the command), not half way through.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// lodgeErr words a failed lodge call by what lodge printed.
func lodgeErr(op string, err error, stderr []byte) error {
	msg := strings.TrimSpace(string(stderr))
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		msg = strings.TrimSpace(msg[i+1:])
	}
	msg = strings.TrimPrefix(msg, "lodge: ")
	if msg == "" {
		return fmt.Errorf("lodge %s: %w", op, err)
	}
	return fmt.Errorf("lodge %s: %s", op, msg)
}

// Create runs `lodge run -d --rm --timeout` with tini as PID 1 (it reaps
// what commands leave behind) and a sleep as its only child.
func (l LodgeRunner) Create(ctx context.Context, c CreateArgs) (string, error) {
	args := []string{"run", "-d", "--rm", "--init", "--name", c.Name, "--label", Label + "=" + c.Name,
		"--network", c.Network, "--stop-timeout", "0", "--timeout", c.Timeout.String()}
	if c.Pull {
		args = append(args, "--pull", "missing")
	} else {
		args = append(args, "--pull", "never")
	}
	if c.Memory != "" {
		args = append(args, "--memory", c.Memory)
	}
	if c.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(c.CPUs, 'f', -1, 64))
	}
	for _, e := range c.Env {
		args = append(args, "--env", e)
	}
	args = append(args, c.Image, "sleep", holdSeconds)
	var stderr bytes.Buffer
	cmd := l.command(ctx, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", lodgeErr("run", err, stderr.Bytes())
	}
	if c.Network == "none" {
		return "", nil
	}
	var out bytes.Buffer
	stderr.Reset()
	cmd = l.command(ctx, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", c.Name)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", lodgeErr("inspect", err, stderr.Bytes())
	}
	return strings.TrimSpace(out.String()), nil
}

// Exec runs `lodge exec`. Lodge's own failures (no such container, the
// command not found) are exit codes 125-127 with lodge's message on
// stderr, as docker's.
func (l LodgeRunner) Exec(ctx context.Context, name string, x ExecArgs) (int, error) {
	args := []string{"exec"}
	if x.Stdin != nil {
		args = append(args, "-i")
	}
	if x.Timeout > 0 {
		args = append(args, "--timeout", x.Timeout.String())
	}
	for _, e := range x.Env {
		args = append(args, "--env", e)
	}
	if x.Dir != "" {
		args = append(args, "--workdir", x.Dir)
	}
	if x.User != "" {
		args = append(args, "--user", x.User)
	}
	cmd := l.command(ctx, append(append(args, name), x.Argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = x.Stdin, x.Stdout, x.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), nil
	}
	return 0, fmt.Errorf("lodge exec: %w", err)
}

// SetTimeout runs `lodge update --timeout`.
func (l LodgeRunner) SetTimeout(ctx context.Context, name string, d time.Duration) error {
	var stderr bytes.Buffer
	cmd := l.command(ctx, "update", "--timeout", d.String(), name)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return lodgeErr("update", err, stderr.Bytes())
	}
	return nil
}

// Remove runs `lodge rm -f`.
func (l LodgeRunner) Remove(ctx context.Context, name string) error {
	var stderr bytes.Buffer
	cmd := l.command(ctx, "rm", "-f", name)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return lodgeErr("rm", err, stderr.Bytes())
	}
	return nil
}

// List runs `lodge ps -a` filtered by Label.
func (l LodgeRunner) List(ctx context.Context) ([]Container, error) {
	var stdout, stderr bytes.Buffer
	cmd := l.command(ctx, "ps", "-a", "--filter", "label="+Label, "--format", "json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, lodgeErr("ps", err, stderr.Bytes())
	}
	var out []Container
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var row struct{ Names, State string }
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("lodge ps: %w", err)
		}
		out = append(out, Container{Name: row.Names, State: row.State})
	}
	return out, sc.Err()
}
