package sandboxsvc

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxBackground bounds the background commands a sandbox keeps (running or
// finished and not yet deleted).
const maxBackground = 32

// pidFile is where, in a sandbox, a background command's shell writes its
// PID (in the sandbox's own PID namespace) for a later kill: in /tmp, which
// any user may write.
func pidFile(cid string) string { return "/tmp/.lodge-" + cid + ".pid" }

// Background is a command that runs on after its request (a server, a
// build): its output's last bytes, and its end once it has one.
type Background struct {
	ID        string    `json:"command_id"`
	Argv      []string  `json:"argv"`
	StartedAt time.Time `json:"started_at"`
	Running   bool      `json:"running"`
	// ExitCode and FinishedAt are set once it has ended.
	ExitCode   *int      `json:"exit_code,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	// Stdout and Stderr are the last MaxOutput bytes of each, in a
	// command's own reply (not in lists).
	Stdout string `json:"stdout,omitempty"`
	Stderr string `json:"stderr,omitempty"`
}

// bgCommand is a Background and what it runs on.
type bgCommand struct {
	mu             sync.Mutex // guards b and the tails
	b              Background
	stdout, stderr tail
	done           chan struct{} // closed when it has ended
	stop           context.CancelFunc
}

// tail keeps the last max bytes written to it. It holds up to twice that
// and moves the last max to its front when full, so that a command that
// writes much costs a copy per max bytes, not one per write.
type tail struct {
	max int
	buf []byte
	mu  *sync.Mutex // the command's
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	if len(t.buf)+len(p) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// last returns the last max bytes (its lock held).
func (t *tail) last() string {
	if len(t.buf) > t.max {
		return string(t.buf[len(t.buf)-t.max:])
	}
	return string(t.buf)
}

// Start starts a background command: its shell writes its PID where Kill
// finds it, then becomes the command.
func (s *Service) Start(id string, r CommandRequest) (Background, error) {
	if r.Stream || r.Stdin != nil {
		return Background{}, badRequest{"background: not with stream or stdin"}
	}
	r.Background = true
	x, err := s.execArgs(r)
	if err != nil {
		return Background{}, err
	}
	cid := "cmd-" + newID()[4:]
	argv := x.Argv
	x.Argv = append([]string{"/bin/sh", "-c", `echo $$ > ` + pidFile(cid) + ` && exec "$@"`, "sh"}, argv...)
	ctx, stop := context.WithCancel(context.Background())
	c := &bgCommand{done: make(chan struct{}), stop: stop, b: Background{ID: cid, Argv: argv, StartedAt: s.now().UTC(), Running: true}}
	c.stdout, c.stderr = tail{max: int(s.cfg.MaxOutput), mu: &c.mu}, tail{max: int(s.cfg.MaxOutput), mu: &c.mu}
	x.Stdout, x.Stderr = &c.stdout, &c.stderr
	release, err := s.acquire(id)
	if err != nil {
		stop()
		return Background{}, err
	}
	s.mu.Lock()
	_, alive := s.boxes[id]
	switch {
	case !alive:
		err = fmt.Errorf("%w: %s", errNotFound, id)
	case len(s.bg[id]) >= maxBackground:
		err = fmt.Errorf("%w: sandbox %s keeps %d background commands: delete finished ones", errLimit, id, maxBackground)
	default:
		if s.bg[id] == nil {
			s.bg[id] = map[string]*bgCommand{}
		}
		s.bg[id][cid] = c
	}
	s.mu.Unlock()
	if err != nil {
		release()
		stop()
		return Background{}, err
	}
	go func() {
		defer close(c.done)
		defer release()
		code, err := s.run.Exec(ctx, id, x)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.b.Running, c.b.FinishedAt = false, s.now().UTC()
		if err != nil {
			c.b.Error = err.Error()
		} else {
			c.b.ExitCode = &code
		}
	}()
	return c.view(false), nil
}

func (c *bgCommand) view(output bool) Background {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.b
	if output {
		b.Stdout, b.Stderr = c.stdout.last(), c.stderr.last()
	}
	return b
}

func (s *Service) background(id, cid string) (*bgCommand, error) {
	if _, err := s.Get(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.bg[id][cid]
	if !ok {
		return nil, fmt.Errorf("%w: sandbox %s has no command %s", errNotFound, id, cid)
	}
	return c, nil
}

// Backgrounds lists a sandbox's background commands, oldest first.
func (s *Service) Backgrounds(id string) ([]Background, error) {
	if _, err := s.Get(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	var cs []*bgCommand
	for _, c := range s.bg[id] {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	out := make([]Background, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.view(false))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, nil
}

// Command returns a background command with its output.
func (s *Service) Command(id, cid string) (Background, error) {
	c, err := s.background(id, cid)
	if err != nil {
		return Background{}, err
	}
	return c.view(true), nil
}

// Kill ends a background command (SIGKILL, in the sandbox) if it runs, and
// forgets it.
func (s *Service) Kill(ctx context.Context, id, cid string) error {
	c, err := s.background(id, cid)
	if err != nil {
		return err
	}
	select {
	case <-c.done:
	default:
		// Its PID, as its shell wrote it: a number, or nothing is killed.
		if b, err := s.ReadFile(ctx, id, pidFile(cid), false); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 1 {
				s.exec(ctx, id, ExecArgs{Argv: []string{"kill", "-KILL", strconv.Itoa(n)}, Timeout: defaultCommandTimeout,
					Stdout: io.Discard, Stderr: io.Discard})
			}
		}
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.stop() // its lodge exec, at least
			<-c.done
		}
	}
	s.mu.Lock()
	delete(s.bg[id], cid)
	s.mu.Unlock()
	return nil
}

// forget stops and forgets a removed sandbox's background commands.
func (s *Service) forget(id string) {
	s.mu.Lock()
	cs := s.bg[id]
	delete(s.bg, id)
	s.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
}
