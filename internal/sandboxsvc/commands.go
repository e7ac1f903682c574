package sandboxsvc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"
)

// defaultCommandTimeout is a command's when its request gives none.
const defaultCommandTimeout = time.Minute

// CommandRequest is one command to run in a sandbox: Cmd through
// /bin/sh -c, or Argv as it is.
type CommandRequest struct {
	Cmd            string            `json:"cmd"`
	Argv           []string          `json:"argv"`
	Env            map[string]string `json:"env"`
	Cwd            string            `json:"cwd"`
	User           string            `json:"user"`
	Stdin          *string           `json:"stdin"`
	TimeoutSeconds int               `json:"timeout_seconds"`
	// Stream: the reply is a stream of events as the output comes
	// (application/x-ndjson), not one object at the end.
	Stream bool `json:"stream"`
	// Background: the reply comes once it runs; it runs on (until its
	// timeout, if given, or the sandbox's end) and is asked after by ID.
	Background bool `json:"background"`
	// StdinOpen: a background command's stdin stays open (after Stdin,
	// if given) for SendStdin, until CloseStdin.
	StdinOpen bool `json:"stdin_open"`
	// PTY runs a background command on a terminal of that size (its
	// output one stream, its input through SendStdin; Resize changes
	// the size).
	PTY *TermSize `json:"pty"`
}

// TermSize is a terminal's size, in characters.
type TermSize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

func (t TermSize) check() error {
	if t.Cols == 0 || t.Rows == 0 || t.Cols > 1000 || t.Rows > 1000 {
		return badRequest{fmt.Sprintf("terminal size %dx%d: want cols and rows of 1-1000", t.Cols, t.Rows)}
	}
	return nil
}

// CommandResult is a finished command.
type CommandResult struct {
	ExitCode        int    `json:"exit_code"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated,omitempty"`
	StderrTruncated bool   `json:"stderr_truncated,omitempty"`
	// TimedOut: its timeout passed and it was killed (exit code 137).
	TimedOut   bool  `json:"timed_out,omitempty"`
	DurationMS int64 `json:"duration_ms"`
}

func (s *Service) execArgs(r CommandRequest) (ExecArgs, error) {
	var x ExecArgs
	switch {
	case r.Cmd != "" && len(r.Argv) > 0:
		return x, badRequest{"cmd or argv, not both"}
	case r.Cmd != "":
		x.Argv = []string{"/bin/sh", "-c", r.Cmd}
	case len(r.Argv) > 0 && r.Argv[0] != "":
		x.Argv = r.Argv
	default:
		return x, badRequest{"no command: give cmd (run by /bin/sh -c) or argv"}
	}
	for _, a := range x.Argv {
		if strings.Contains(a, "\x00") {
			return x, badRequest{"a command's words cannot hold NUL"}
		}
	}
	if r.Cwd != "" && !path.IsAbs(r.Cwd) {
		return x, badRequest{fmt.Sprintf("cwd %q: want an absolute path", r.Cwd)}
	}
	if strings.HasPrefix(r.User, "-") || strings.ContainsAny(r.User, " \x00") {
		return x, badRequest{fmt.Sprintf("user %q: want uid[:gid]", r.User)}
	}
	x.Dir, x.User = r.Cwd, r.User
	var err error
	if x.Env, err = envList(r.Env); err != nil {
		return x, err
	}
	def := defaultCommandTimeout
	if r.Background {
		def = 0 // the sandbox's deadline ends it
	}
	if x.Timeout, err = s.seconds(r.TimeoutSeconds, def); err != nil {
		return x, err
	}
	if r.Stdin != nil {
		x.Stdin = strings.NewReader(*r.Stdin)
	}
	if r.PTY != nil && !r.Background {
		return x, badRequest{"pty: for a background command (its input goes through .../stdin)"}
	}
	return x, nil
}

// acquire takes one of the MaxCommands places for a command in sandbox
// id, and one of its tenant's own; release gives them back.
func (s *Service) acquire(id string) (release func(), err error) {
	s.mu.Lock()
	tenant := ""
	if sb, ok := s.boxes[id]; ok {
		tenant = sb.Tenant
	}
	if limit := s.tenant(tenant).MaxCommands; limit > 0 && s.tenantRunning[tenant] >= limit {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d commands of tenant %s running, the most it may run at once (its MAX_COMMANDS)", errLimit, limit, tenant)
	}
	s.tenantRunning[tenant]++
	s.mu.Unlock()
	untake := func() {
		s.mu.Lock()
		if s.tenantRunning[tenant]--; s.tenantRunning[tenant] == 0 {
			delete(s.tenantRunning, tenant)
		}
		s.mu.Unlock()
	}
	select {
	case s.running <- struct{}{}:
		return func() { <-s.running; untake() }, nil
	default:
		untake()
		return nil, fmt.Errorf("%w: %d commands running, the most this service runs at once (serve --max-commands)", errLimit, s.cfg.MaxCommands)
	}
}

// exec runs x in sandbox id. A caller that goes away ends the command
// (SIGTERM).
func (s *Service) exec(ctx context.Context, id string, x ExecArgs) (int, error) {
	if err := s.awake(ctx, id); err != nil {
		return 0, err
	}
	release, err := s.acquire(id)
	if err != nil {
		return 0, err
	}
	defer release()
	return s.run.Exec(ctx, id, x)
}

// finished is a command's result from its exit code, its start and its
// timeout.
func finished(code int, start time.Time, timeout time.Duration) CommandResult {
	d := time.Since(start)
	return CommandResult{ExitCode: code, TimedOut: code == 137 && d >= timeout, DurationMS: d.Milliseconds()}
}

// Run runs a command and returns its result, each stream kept up to the
// service's MaxOutput.
func (s *Service) Run(ctx context.Context, id string, r CommandRequest) (CommandResult, error) {
	x, err := s.execArgs(r)
	if err != nil {
		return CommandResult{}, err
	}
	out, errOut := &capped{max: s.cfg.MaxOutput}, &capped{max: s.cfg.MaxOutput}
	x.Stdout, x.Stderr = out, errOut
	start := time.Now()
	code, err := s.exec(ctx, id, x)
	if err != nil {
		return CommandResult{}, err
	}
	res := finished(code, start, x.Timeout)
	res.Stdout, res.Stderr = out.buf.String(), errOut.buf.String()
	res.StdoutTruncated, res.StderrTruncated = out.truncated, errOut.truncated
	return res, nil
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	max       int64
	buf       bytes.Buffer
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - int64(c.buf.Len()); int64(len(p)) > room {
		c.buf.Write(p[:max(room, 0)])
		c.truncated = true
		return len(p), nil
	}
	return c.buf.Write(p)
}

// Event is one line of a streamed command: output as it comes, then the
// result.
type Event struct {
	Stdout string         `json:"stdout,omitempty"`
	Stderr string         `json:"stderr,omitempty"`
	Result *CommandResult `json:"result,omitempty"`
	Error  string         `json:"error,omitempty"`
}

// Stream runs a command and hands send its output as it comes, then its
// result (without the output). What is wrong before it runs is returned,
// with nothing sent.
func (s *Service) Stream(ctx context.Context, id string, r CommandRequest, send func(Event) error) error {
	x, err := s.execArgs(r)
	if err != nil {
		return err
	}
	if err := s.awake(ctx, id); err != nil {
		return err
	}
	var mu sync.Mutex // orders send's calls
	emit := func(e Event) error {
		mu.Lock()
		defer mu.Unlock()
		return send(e)
	}
	x.Stdout = eventWriter(func(p string) error { return emit(Event{Stdout: p}) })
	x.Stderr = eventWriter(func(p string) error { return emit(Event{Stderr: p}) })
	start := time.Now()
	code, err := s.exec(ctx, id, x)
	if err != nil {
		return emit(Event{Error: err.Error()})
	}
	res := finished(code, start, x.Timeout)
	return emit(Event{Result: &res})
}

type eventWriter func(string) error

func (w eventWriter) Write(p []byte) (int, error) {
	if err := w(string(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// checkPath says whether p names a file in a sandbox.
func checkPath(p string) error {
	if !path.IsAbs(p) || path.Clean(p) == "/" || len(p) > 4096 || strings.Contains(p, "\x00") {
		return badRequest{fmt.Sprintf("path %q: want an absolute path to a file", p)}
	}
	return nil
}

// errFile: the sandbox could not read or write the file.
type errFile struct{ msg string }

func (e errFile) Error() string { return e.msg }

// fileOp runs argv in the sandbox for a read or write of p, its output
// kept up to MaxFile bytes.
func (s *Service) fileOp(ctx context.Context, id, verb, p string, argv []string, stdin io.Reader) ([]byte, error) {
	out := &capped{max: s.cfg.MaxFile}
	errOut := &capped{max: 4096}
	code, err := s.exec(ctx, id, ExecArgs{Argv: argv, Stdin: stdin, Timeout: defaultCommandTimeout, Stdout: out, Stderr: errOut})
	switch {
	case err != nil:
		return nil, err
	case code != 0:
		return nil, errFile{fmt.Sprintf("%s %s: %s", verb, p, strings.TrimSpace(errOut.buf.String()))}
	case out.truncated:
		return nil, badRequest{fmt.Sprintf("%s %s: larger than %d bytes, the most this service hands out", verb, p, s.cfg.MaxFile)}
	}
	return out.buf.Bytes(), nil
}

// ReadFile returns a file of the sandbox, or with archive a directory as a
// tar made in the sandbox (which the service hands on unread), up to
// MaxFile bytes.
func (s *Service) ReadFile(ctx context.Context, id, p string, archive bool) ([]byte, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	argv := []string{"cat", "--", p}
	if archive {
		argv = []string{"tar", "-c", "-f", "-", "-C", p, "."}
	}
	return s.fileOp(ctx, id, "read", p, argv, nil)
}

// WriteFile writes a file of the sandbox, making its directory; with
// archive, data is a tar unpacked (in the sandbox) into the directory p.
func (s *Service) WriteFile(ctx context.Context, id, p string, data []byte, archive bool) error {
	if err := checkPath(p); err != nil {
		return err
	}
	script := `mkdir -p -- "$(dirname -- "$1")" && cat > "$1"`
	if archive {
		script = `mkdir -p -- "$1" && tar -x -f - -C "$1"`
	}
	_, err := s.fileOp(ctx, id, "write", p, []string{"/bin/sh", "-c", script, "sh", p}, bytes.NewReader(data))
	return err
}
