package sandboxsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lodgeruntime/lodge/internal/pty"
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
	// StdinOpen: it takes input (SendStdin) until CloseStdin or its end.
	StdinOpen bool `json:"stdin_open,omitempty"`
	// PTY is its terminal's size, if it runs on one.
	PTY *TermSize `json:"pty,omitempty"`
}

// bgCommand is a Background and what it runs on.
type bgCommand struct {
	mu             sync.Mutex // guards b, the tails and followers
	b              Background
	stdout, stderr tail
	// followers get its output as it comes, then its result (Follow).
	followers map[*follower]struct{}
	// result is its end as an event, once it has ended.
	result *Event
	done   chan struct{} // closed when it has ended
	stop   context.CancelFunc

	inMu sync.Mutex // guards in; held through a write to it
	// in is the write end of its stdin's pipe (nil: closed, or none).
	in *os.File
	// inOpen is in != nil, for views that must not wait for a write.
	inOpen atomic.Bool
	// term: it runs on a terminal, whose master is in.
	term bool
}

// closeIn closes its stdin (c.inMu held).
func (c *bgCommand) closeIn() error {
	if c.in == nil {
		return nil
	}
	err := c.in.Close()
	c.in = nil
	c.inOpen.Store(false)
	return err
}

// stdinWait bounds how long a write to a background command's stdin
// waits for the command to read (the pipe holds 64 KiB).
const stdinWait = 30 * time.Second

// tail keeps the last max bytes written to it. It holds up to twice that
// and moves the last max to its front when full, so that a command that
// writes much costs a copy per max bytes, not one per write.
type tail struct {
	max int
	buf []byte
	c   *bgCommand // whose lock guards buf, and whose followers get what is written
	err bool       // stderr's
}

func (t *tail) Write(p []byte) (int, error) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if len(t.c.followers) > 0 {
		ev := Event{Stdout: string(p)}
		if t.err {
			ev = Event{Stderr: string(p)}
		}
		t.c.publish(ev)
	}
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
	if r.Stream {
		return Background{}, badRequest{"background: not with stream"}
	}
	r.Background = true
	x, err := s.execArgs(r)
	if err != nil {
		return Background{}, err
	}
	if err := s.awake(context.Background(), id); err != nil {
		return Background{}, err
	}
	inR, in, err := openStdin(r, &x)
	if err != nil {
		return Background{}, err
	}
	dropPipe := func() {
		if inR != nil {
			inR.Close()
			in.Close()
		}
	}
	cid := "cmd-" + newID()[4:]
	argv := x.Argv
	x.Argv = append([]string{"/bin/sh", "-c", `echo $$ > ` + pidFile(cid) + ` && exec "$@"`, "sh"}, argv...)
	ctx, stop := context.WithCancel(context.Background())
	c := &bgCommand{done: make(chan struct{}), stop: stop, in: in, b: Background{ID: cid, Argv: argv, StartedAt: s.now().UTC(), Running: true}}
	c.inOpen.Store(in != nil)
	if r.PTY != nil {
		size := *r.PTY
		c.b.PTY, c.term = &size, true
	}
	c.stdout, c.stderr = tail{max: int(s.cfg.MaxOutput), c: c}, tail{max: int(s.cfg.MaxOutput), c: c, err: true}
	x.Stdout, x.Stderr = &c.stdout, &c.stderr
	release, err := s.acquire(id)
	if err != nil {
		stop()
		dropPipe()
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
		dropPipe()
		return Background{}, err
	}
	if r.Stdin != nil {
		// Its first input, written as later input is (the lock taken
		// now: nothing sent after this reply goes before it).
		c.inMu.Lock()
		go func() {
			defer c.inMu.Unlock()
			c.write([]byte(*r.Stdin))
			if !r.StdinOpen && !c.term {
				c.closeIn()
			}
		}()
	}
	output := make(chan struct{})
	if c.term {
		// Its terminal's output, until its last process lets go of the
		// slave (EIO): one stream, as a terminal has.
		go func() {
			io.Copy(&c.stdout, in)
			close(output)
		}()
	} else {
		close(output)
	}
	go func() {
		defer close(c.done)
		defer release()
		code, err := s.run.Exec(ctx, id, x)
		if inR != nil {
			inR.Close()
			if c.term {
				// What it wrote last is in the terminal already; should
				// the slave stay open elsewhere (a process of the host that
				// holds it), the end of its output is not waited for.
				in.SetReadDeadline(time.Now().Add(time.Second))
			}
			<-output
			c.inMu.Lock()
			c.closeIn()
			c.inMu.Unlock()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.b.Running, c.b.FinishedAt = false, s.now().UTC()
		if err != nil {
			c.b.Error = err.Error()
			c.result = &Event{Error: err.Error()}
		} else {
			c.b.ExitCode = &code
			res := finished(code, c.b.StartedAt, x.Timeout)
			c.result = &Event{Result: &res}
		}
		c.publish(*c.result)
		c.followers = nil
	}()
	return c.view(false), nil
}

// openStdin gives a background command the stdin it asks for, if any: a
// pipe, or a terminal (x.TTY). It returns the command's end (the read end,
// or the terminal's slave) and the service's (the write end, or the
// master: input written to it, output read from it).
func openStdin(r CommandRequest, x *ExecArgs) (theirs, ours *os.File, err error) {
	switch {
	case r.PTY != nil:
		if err := r.PTY.check(); err != nil {
			return nil, nil, err
		}
		if ours, theirs, err = pty.Open(); err != nil {
			return nil, nil, fmt.Errorf("a terminal: %w", err)
		}
		if err := setSize(ours, *r.PTY); err != nil {
			ours.Close()
			theirs.Close()
			return nil, nil, err
		}
		x.TTY, x.Stdin = theirs, nil
	case r.Stdin != nil || r.StdinOpen:
		if theirs, ours, err = os.Pipe(); err != nil {
			return nil, nil, err
		}
		x.Stdin = theirs
	}
	return theirs, ours, nil
}

// write writes p to its stdin (c.inMu held), waiting at most stdinWait
// for the command to take it.
func (c *bgCommand) write(p []byte) error {
	c.in.SetWriteDeadline(time.Now().Add(stdinWait))
	n, err := c.in.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return conflict{fmt.Sprintf("command %s has not read its input for %v: %d of %d bytes taken", c.b.ID, stdinWait, n, len(p))}
	}
	return err
}

// setSize sets the size of the terminal whose master is m.
func setSize(m *os.File, t TermSize) error {
	if err := pty.SetSize(m, t.Cols, t.Rows); err != nil {
		return fmt.Errorf("terminal size: %w", err)
	}
	return nil
}

// Resize changes the size of a background command's terminal; the
// command sees it as a terminal's program does (SIGWINCH).
func (s *Service) Resize(id, cid string, size TermSize) error {
	if err := size.check(); err != nil {
		return err
	}
	c, err := s.background(id, cid)
	if err != nil {
		return err
	}
	if !c.term {
		return conflict{fmt.Sprintf("command %s has no terminal (start it with pty)", cid)}
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	if c.in == nil {
		return conflict{fmt.Sprintf("command %s has ended", cid)}
	}
	if err := setSize(c.in, size); err != nil {
		return err
	}
	c.mu.Lock()
	c.b.PTY = &size
	c.mu.Unlock()
	return nil
}

// SendStdin writes p to a background command's stdin.
func (s *Service) SendStdin(id, cid string, p []byte) error {
	c, err := s.background(id, cid)
	if err != nil {
		return err
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	if c.in == nil {
		return conflict{fmt.Sprintf("command %s takes no input: it has ended, its stdin was closed, or it was started without stdin_open", cid)}
	}
	return c.write(p)
}

// CloseStdin closes a background command's stdin: it reads the end of
// its input.
func (s *Service) CloseStdin(id, cid string) error {
	c, err := s.background(id, cid)
	if err != nil {
		return err
	}
	if c.term {
		return conflict{fmt.Sprintf("command %s runs on a terminal, whose input is not closed: send it what ends its input there (Ctrl-D, \"\\u0004\"), or delete it", cid)}
	}
	c.inMu.Lock()
	defer c.inMu.Unlock()
	if c.in == nil {
		return conflict{fmt.Sprintf("command %s takes no input: it has ended, its stdin was closed, or it was started without stdin_open", cid)}
	}
	return c.closeIn()
}

// followBytes is how much output a follower may be behind before it is
// let go (its stream ends with an error): a slow reader cannot hold the
// command up, nor make the service keep its output without bound.
const followBytes = 1 << 20

// follower is one reader of a command's output (Follow): what it has not
// taken yet, and a signal that there is more.
type follower struct {
	mu     sync.Mutex // guards queue, queued and behind
	queue  []Event
	queued int
	behind bool // let go: it fell followBytes behind
	more   chan struct{}
}

func (f *follower) put(ev Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.behind {
		return
	}
	if f.queued += len(ev.Stdout) + len(ev.Stderr); f.queued > followBytes {
		f.behind, f.queue = true, nil
	} else {
		f.queue = append(f.queue, ev)
	}
	select {
	case f.more <- struct{}{}:
	default:
	}
}

// take returns what is queued, and whether the follower was let go.
func (f *follower) take() ([]Event, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queue
	f.queue, f.queued = nil, 0
	return q, f.behind
}

// publish hands ev to every follower (c.mu held).
func (c *bgCommand) publish(ev Event) {
	for f := range c.followers {
		f.put(ev)
	}
}

// Follow hands send a background command's output as it comes (with
// replay, first what is kept of it: stdout's, then stderr's), then its
// result, until it ends or ctx does. It calls ready once it follows: what
// the command writes after is sent.
func (s *Service) Follow(ctx context.Context, id, cid string, replay bool, send func(Event) error, ready func()) error {
	c, err := s.background(id, cid)
	if err != nil {
		return err
	}
	var first []Event
	c.mu.Lock()
	if replay {
		if out := c.stdout.last(); out != "" {
			first = append(first, Event{Stdout: out})
		}
		if out := c.stderr.last(); out != "" {
			first = append(first, Event{Stderr: out})
		}
	}
	var f *follower
	if c.result != nil {
		first = append(first, *c.result)
	} else {
		f = &follower{more: make(chan struct{}, 1)}
		if c.followers == nil {
			c.followers = map[*follower]struct{}{}
		}
		c.followers[f] = struct{}{}
	}
	c.mu.Unlock()
	ready()
	if f != nil {
		defer func() {
			c.mu.Lock()
			delete(c.followers, f)
			c.mu.Unlock()
		}()
	}
	for _, ev := range first {
		if err := send(ev); err != nil {
			return err
		}
	}
	for f != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.more:
		}
		evs, behind := f.take()
		if behind {
			return send(Event{Error: fmt.Sprintf("this reader fell %d bytes behind the command's output: follow it again (replay gives what is kept)", followBytes)})
		}
		for _, ev := range evs {
			if err := send(ev); err != nil || ev.Result != nil || ev.Error != "" {
				return err
			}
		}
	}
	return nil
}

func (c *bgCommand) view(output bool) Background {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.b
	b.StdinOpen = c.inOpen.Load()
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
		if err := s.awake(ctx, id); err != nil {
			return err // its kill would wait for a thaw
		}
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
