package sandboxsvc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lodgeruntime/lodge/internal/unixsock"
)

// Label marks the containers a service made; its value says which service
// (OwnerOf its records' directory), so that services with directories of
// their own never take each other's containers for orphans.
const Label = "io.lodge.sandbox"

// holdSeconds is how long a sandbox's own process sleeps: for ever, as far
// as anyone waits (the service's deadline ends the sandbox first).
const holdSeconds = "2147483647"

// Runner makes, enters and removes the containers sandboxes are.
type Runner interface {
	// Create makes and starts the container named c.Name, running until
	// removed.
	Create(ctx context.Context, c CreateArgs) (Created, error)
	// Exec runs x in the container and returns its exit code; an error
	// means it could not be run.
	Exec(ctx context.Context, name string, x ExecArgs) (int, error)
	// SetTimeout makes the container's monitor stop it d from now.
	SetTimeout(ctx context.Context, name string, d time.Duration) error
	// Pause freezes the container's processes; Resume thaws them.
	Pause(ctx context.Context, name string) error
	Resume(ctx context.Context, name string) error
	// Metrics samples the container's CPU, memory and processes.
	Metrics(ctx context.Context, name string) (Metrics, error)
	// SetEgress replaces the container's egress rules (lodge update
	// --allow-out, --deny-out, --egress-proxy).
	SetEgress(ctx context.Context, name string, e Egress) error
	// Remove removes the container, ending it first.
	Remove(ctx context.Context, name string) error
	// List returns the containers whose Label is owner.
	List(ctx context.Context, owner string) ([]Container, error)
	// Commit keeps the container's files as the image named image.
	Commit(ctx context.Context, name, image string) error
	// Images lists the names of lodge's images (REPOSITORY:TAG).
	Images(ctx context.Context) ([]string, error)
	// RemoveImage removes the image named image.
	RemoveImage(ctx context.Context, image string) error
	// DialPort connects to 127.0.0.1:port in the container's own network
	// namespace, whatever its network. ctx bounds the dial only.
	DialPort(ctx context.Context, name string, port uint16) (net.Conn, error)
	// Watch watches dir in the container (watch.go). ctx bounds its start.
	Watch(ctx context.Context, name, dir string, recursive bool) (Watcher, error)
}

// CreateArgs is a sandbox's container.
type CreateArgs struct {
	Name, Image, Network, Memory string
	// Disk is its writable layer's size ("": lodge's default).
	Disk string
	// Owner is Label's value.
	Owner string
	CPUs  float64
	Env   []string // NAME=VALUE
	// Pull: the image may be pulled if it is not in lodge's store.
	Pull bool
	// Egress is what it may open connections to.
	Egress Egress
	// Timeout: its monitor stops it (and, it being --rm, removes it) this
	// long after it starts, whether or not the service still runs.
	Timeout time.Duration
	// OnTimeout "pause": its monitor pauses it at Timeout instead.
	OnTimeout string
}

// Created is a container Create made: its ID, and its address on its
// network ("" with none).
type Created struct {
	ID, IP string
}

// ExecArgs is one command in a sandbox.
type ExecArgs struct {
	Argv           []string
	Env            []string // NAME=VALUE
	Dir, User      string
	Timeout        time.Duration // SIGKILL in the guest after this long
	Stdin          io.Reader     // nil: none
	Stdout, Stderr io.Writer
	// TTY, if set, is a terminal's slave end: the command's stdin,
	// stdout and stderr and its controlling terminal (Stdin, Stdout and
	// Stderr are then unused), so that it runs on a terminal in the
	// sandbox whose size follows this one's.
	TTY *os.File
}

// Container is one of the service's containers as lodge lists it.
type Container struct {
	Name, State string
}

// LodgeRunner runs the lodge command line, one process per call.
type LodgeRunner struct {
	// Bin is the lodge executable.
	Bin string
	// PauseReclaim: Pause gives the host back the container's file cache
	// (lodge pause --reclaim).
	PauseReclaim bool
}

func (l LodgeRunner) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, l.Bin, args...)
	// A call whose caller went away ends as lodge ends on SIGTERM (an
	// exec hands it to the command), not half way through.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// output runs lodge with args and returns what it printed; a failure is
// worded by the last line lodge wrote on stderr.
func (l LodgeRunner) output(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := l.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := lastWords(stderr.String()); msg != "" {
			return nil, fmt.Errorf("lodge %s: %s", args[0], msg)
		}
		return nil, fmt.Errorf("lodge %s: %w", args[0], err)
	}
	return stdout.Bytes(), nil
}

// lastWords is the last line lodge wrote on stderr, without "lodge: ".
func lastWords(stderr string) string {
	msg := strings.TrimSpace(stderr)
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		msg = strings.TrimSpace(msg[i+1:])
	}
	return strings.TrimPrefix(msg, "lodge: ")
}

// DialPort runs `lodge port-forward --stdio NAME PORT` with one end of a
// socket pair as its stdin and stdout; the other end is the connection.
// One that lodge could not make reads as a *portError with lodge's words
// (its first read, at the end of the stream).
func (l LodgeRunner) DialPort(ctx context.Context, name string, port uint16) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mine, theirs, err := unixsock.Pair()
	if err != nil {
		return nil, err
	}
	defer mine.Close()
	// Not ended with ctx: the connection outlives the request that made
	// it (a transport keeps it for the next), and ends when closed.
	cmd := exec.Command(l.Bin, "port-forward", "--stdio", name, strconv.Itoa(int(port)))
	stderr := &capped{max: 4096}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = theirs, theirs, stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return nil, fmt.Errorf("lodge port-forward: %w", err)
	}
	c, err := net.FileConn(mine)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, err
	}
	pc := &procConn{Conn: c, cmd: cmd, exited: make(chan struct{})}
	go func() {
		if err := cmd.Wait(); err != nil {
			pc.failed = &portError{msg: fmt.Sprintf("port %d of sandbox %s: %s", port, name, lastWords(stderr.buf.String()))}
		}
		close(pc.exited)
	}()
	return pc, nil
}

// procConn is a connection relayed by a lodge process.
type procConn struct {
	net.Conn
	cmd    *exec.Cmd
	exited chan struct{}
	failed *portError // set before exited closes
	got    atomic.Bool
	closed sync.Once
}

func (c *procConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.got.Store(true)
	}
	return n, c.why(err)
}

func (c *procConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	return n, c.why(err)
}

// why is lodge's failure, where the connection failed before anything
// came from the sandbox (lodge could not connect, and ended); else err.
func (c *procConn) why(err error) error {
	if err == nil || c.got.Load() {
		return err
	}
	select {
	case <-c.exited:
		if c.failed != nil {
			return c.failed
		}
	case <-time.After(2 * time.Second):
	}
	return err
}

// Close ends the connection; lodge then ends as its stdin does, or is
// killed.
func (c *procConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() {
		go func() {
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				c.cmd.Process.Kill()
			}
		}()
	})
	return err
}

// Create runs `lodge run -d --rm --timeout` with tini as PID 1 (it reaps
// what commands leave behind) and a sleep as its only child.
func (l LodgeRunner) Create(ctx context.Context, c CreateArgs) (Created, error) {
	args := []string{"run", "-d", "--rm", "--init", "--name", c.Name, "--label", Label + "=" + c.Owner,
		"--network", c.Network, "--stop-timeout", "0", "--timeout", c.Timeout.String()}
	if c.OnTimeout != "" {
		args = append(args, "--on-timeout", c.OnTimeout)
	}
	if c.Pull {
		args = append(args, "--pull", "missing")
	} else {
		args = append(args, "--pull", "never")
	}
	if c.Memory != "" {
		args = append(args, "--memory", c.Memory)
	}
	if c.Disk != "" {
		args = append(args, "--storage-opt", "size="+c.Disk)
	}
	if c.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(c.CPUs, 'f', -1, 64))
	}
	for _, e := range c.Env {
		args = append(args, "--env", e)
	}
	for _, d := range c.Egress.Allow {
		args = append(args, "--allow-out", d)
	}
	for _, d := range c.Egress.Deny {
		args = append(args, "--deny-out", d)
	}
	if c.Egress.Proxy > 0 {
		args = append(args, "--egress-proxy", strconv.Itoa(c.Egress.Proxy))
	}
	if c.Egress.DNS > 0 {
		args = append(args, "--egress-dns", strconv.Itoa(c.Egress.DNS))
	}
	args = append(args, c.Image, "sleep", holdSeconds)
	id, err := l.output(ctx, args...)
	made := Created{ID: strings.TrimSpace(string(id))}
	if err != nil || c.Network == "none" {
		return made, err
	}
	ip, err := l.output(ctx, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", c.Name)
	made.IP = strings.TrimSpace(string(ip))
	return made, err
}

// SetEgress runs `lodge update --allow-out --deny-out --egress-proxy`
// (an empty list: "").
func (l LodgeRunner) SetEgress(ctx context.Context, name string, e Egress) error {
	args := []string{"update", "--egress-proxy", strconv.Itoa(e.Proxy), "--egress-dns", strconv.Itoa(e.DNS)}
	for flag, list := range map[string][]string{"--allow-out": e.Allow, "--deny-out": e.Deny} {
		if len(list) == 0 {
			list = []string{""}
		}
		for _, d := range list {
			args = append(args, flag, d)
		}
	}
	_, err := l.output(ctx, append(args, name)...)
	return err
}

// Egress is a sandbox's egress rules as lodge takes them: addresses or
// CIDRs it may reach, then those it may not, the port of the proxy its
// ports 80 and 443 go to and that of the resolver its DNS goes to (0:
// none).
type Egress struct {
	Allow, Deny []string
	Proxy, DNS  int
}

// Exec runs `lodge exec`. Lodge's own failures (no such container, the
// command not found) are exit codes 125-127 with lodge's message on
// stderr, as docker's.
func (l LodgeRunner) Exec(ctx context.Context, name string, x ExecArgs) (int, error) {
	args := []string{"exec"}
	if x.Stdin != nil || x.TTY != nil {
		args = append(args, "-i")
	}
	if x.TTY != nil {
		args = append(args, "-t")
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
	if x.TTY != nil {
		// lodge exec -t on the terminal: its session's, so that a new
		// size reaches it (SIGWINCH) and, through it, the sandbox.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = x.TTY, x.TTY, x.TTY
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	}
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
	_, err := l.output(ctx, "update", "--timeout", d.String(), name)
	return err
}

// Pause runs `lodge pause`, with --reclaim if PauseReclaim is set.
func (l LodgeRunner) Pause(ctx context.Context, name string) error {
	args := []string{"pause", name}
	if l.PauseReclaim {
		args = []string{"pause", "--reclaim", name}
	}
	_, err := l.output(ctx, args...)
	return err
}

// Resume runs `lodge unpause`.
func (l LodgeRunner) Resume(ctx context.Context, name string) error {
	_, err := l.output(ctx, "unpause", name)
	return err
}

// Metrics runs `lodge stats --no-stream --format json`.
func (l LodgeRunner) Metrics(ctx context.Context, name string) (Metrics, error) {
	stdout, err := l.output(ctx, "stats", "--no-stream", "--format", "json", name)
	if err != nil {
		return Metrics{}, err
	}
	var row struct {
		CPUPercent                              float64
		MemUsageBytes, MemLimitBytes, PIDsCount uint64
		CPUPerc                                 string
	}
	if err := json.Unmarshal(stdout, &row); err != nil {
		return Metrics{}, fmt.Errorf("lodge stats: %w", err)
	}
	if row.CPUPerc == "--" {
		return Metrics{}, fmt.Errorf("lodge stats: no figures for %s (its VM did not answer)", name)
	}
	return Metrics{CPUUsedPct: row.CPUPercent, MemUsed: row.MemUsageBytes, MemTotal: row.MemLimitBytes, PIDs: row.PIDsCount}, nil
}

// Remove runs `lodge rm -f`.
func (l LodgeRunner) Remove(ctx context.Context, name string) error {
	_, err := l.output(ctx, "rm", "-f", name)
	return err
}

// List runs `lodge ps -a` filtered by Label.
func (l LodgeRunner) List(ctx context.Context, owner string) ([]Container, error) {
	stdout, err := l.output(ctx, "ps", "-a", "--filter", "label="+Label+"="+owner, "--format", "json")
	if err != nil {
		return nil, err
	}
	var out []Container
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var row struct{ Names, State string }
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("lodge ps: %w", err)
		}
		out = append(out, Container{Name: row.Names, State: row.State})
	}
	return out, sc.Err()
}

// Commit runs `lodge commit` (the container frozen while its files are
// read).
func (l LodgeRunner) Commit(ctx context.Context, name, image string) error {
	_, err := l.output(ctx, "commit", name, image)
	return err
}

// Images runs `lodge images --format json`.
func (l LodgeRunner) Images(ctx context.Context) ([]string, error) {
	stdout, err := l.output(ctx, "images", "--format", "json")
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var row struct{ Repository, Tag string }
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			return nil, fmt.Errorf("lodge images: %w", err)
		}
		out = append(out, row.Repository+":"+row.Tag)
	}
	return out, sc.Err()
}

// RemoveImage runs `lodge rmi`.
func (l LodgeRunner) RemoveImage(ctx context.Context, image string) error {
	_, err := l.output(ctx, "rmi", image)
	return err
}
