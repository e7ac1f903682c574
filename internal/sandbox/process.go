package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// outputGrace bounds the wait for the last output after a process exited.
const outputGrace = 5 * time.Second

// Stdio connects a process to the caller. Nil fields are /dev/null in the
// guest. With Terminal, the process gets a terminal in the guest: Stdout
// carries its output and Stderr is unused.
type Stdio struct {
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	Terminal bool
}

// Process is a container's init process (exec id "") or an exec'd one.
type Process struct {
	sb     *Sandbox
	cid    string
	execID string
	pid    int // in the guest

	stdin  net.Conn       // nil without stdin
	output sync.WaitGroup // copies from the guest
}

// attach opens the stdio streams and starts copying; the agent matches
// them to the process by the stream headers. It returns the streams so a
// failed create can close them.
func (p *Process) attach(s Stdio) ([]net.Conn, error) {
	var streams []net.Conn
	fail := func(err error) ([]net.Conn, error) {
		for _, st := range streams {
			st.Close()
		}
		return nil, err
	}
	open := func(kind transport.Kind) (net.Conn, error) {
		st, err := p.sb.agent.OpenStdio(p.cid, p.execID, kind)
		if err == nil {
			streams = append(streams, st)
		}
		return st, err
	}
	if s.Stdin != nil {
		st, err := open(transport.KindStdin)
		if err != nil {
			return fail(err)
		}
		p.stdin = st
		go func() {
			io.Copy(st, s.Stdin)
			st.Close() // half-close: the process sees EOF
		}()
	}
	outs := []struct {
		w    io.Writer
		kind transport.Kind
	}{{s.Stdout, transport.KindStdout}}
	if !s.Terminal {
		outs = append(outs, struct {
			w    io.Writer
			kind transport.Kind
		}{s.Stderr, transport.KindStderr})
	}
	for _, o := range outs {
		if o.w == nil {
			continue
		}
		st, err := open(o.kind)
		if err != nil {
			return fail(err)
		}
		p.output.Add(1)
		go func(w io.Writer) {
			defer p.output.Done()
			io.Copy(w, st)
			st.Close()
		}(o.w)
	}
	return streams, nil
}

// PID is the process's PID in the guest.
func (p *Process) PID() int { return p.pid }

// ExecID is "" for a container's init process.
func (p *Process) ExecID() string { return p.execID }

// Signal sends sig to the process.
func (p *Process) Signal(ctx context.Context, sig int) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("invalid signal %d", sig)
	}
	if err := p.sb.agent.Signal(ctx, p.cid, p.execID, uint32(sig), false); err != nil {
		return fmt.Errorf("container %s: signal %d: %w", p.cid, sig, err)
	}
	return nil
}

// Resize sets the window size of the process's terminal.
func (p *Process) Resize(ctx context.Context, width, height uint32) error {
	return p.sb.agent.ResizePty(ctx, p.cid, p.execID, width, height)
}

// CloseStdin ends the process's input (it reads EOF).
func (p *Process) CloseStdin() {
	if p.stdin != nil {
		p.stdin.Close()
	}
}

// Wait waits for the process to exit and for its output to arrive. If the
// VM dies first, Wait fails.
// vmGoneGrace is how long a failed Wait waits for the VM's end, to say
// why (a panic, QEMU's exit) rather than that the channel closed.
const vmGoneGrace = 3 * time.Second

func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.sb.vm.Done():
			cancel()
		case <-wctx.Done():
		}
	}()
	es, err := p.sb.agent.Wait(wctx, p.cid, p.execID)
	if err != nil {
		// A dying VM closes the channel a moment before QEMU is reaped.
		select {
		case <-p.sb.vm.Done():
			return ExitStatus{}, fmt.Errorf("container %s: %w: %s", p.cid, ErrVMGone, p.sb.GoneReason(ctx))
		case <-time.After(vmGoneGrace):
		}
		return ExitStatus{}, fmt.Errorf("container %s: wait: %w", p.cid, err)
	}
	done := make(chan struct{})
	go func() { p.output.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputGrace):
		p.sb.log.Warn("output streams still open after exit", "container_id", p.cid, "exec_id", p.execID)
	}
	return es, nil
}
