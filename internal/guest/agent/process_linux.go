package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// stdioWait bounds how long a call waits for the stdio streams the host
// announced; it opens them before calling Create or Exec.
const stdioWait = 10 * time.Second

// outputDrain bounds how long Wait waits for output after the process died
// (a background child may hold the output open).
const outputDrain = 5 * time.Second

// process is a container's init or exec'd process.
type process struct {
	p       waitSignaller // a *libcontainer.Process, or a pod holder's *os.Process
	pid     int
	console *os.File       // terminal master, nil without a terminal
	output  sync.WaitGroup // copies to the host
	closers []io.Closer    // stdio streams
	exited  chan struct{}  // closed once waited for
	status  *agentv1.WaitResponse
	reaper  *reaper // told once the process is waited for
}

// waitSignaller is a process the agent started.
type waitSignaller interface {
	Wait() (*os.ProcessState, error)
	Signal(os.Signal) error
}

// starter starts lp and returns the process it started and its pid.
type starter func(lp *libcontainer.Process) (waitSignaller, int, error)

// viaLibcontainer is the starter of libcontainer's start function (a
// container's Start or Run).
func viaLibcontainer(start func(*libcontainer.Process) error) starter {
	return func(lp *libcontainer.Process) (waitSignaller, int, error) {
		if err := start(lp); err != nil {
			return nil, 0, err
		}
		pid, _ := lp.Pid()
		return lp, pid, nil
	}
}

// startProcess wires lp's stdio to the host's streams (or /dev/null), calls
// start, and begins waiting for the process.
func (cs *containers) startProcess(ctx context.Context, cid, execID string, lp *libcontainer.Process,
	want *agentv1.Stdio, start starter) (_ *process, retErr error) {
	if want == nil {
		want = &agentv1.Stdio{}
	}
	p := &process{exited: make(chan struct{}), reaper: cs.reaper}
	var childEnds []*os.File // the process's ends, closed once it holds them
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
		if retErr != nil {
			p.closeStreams()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, stdioWait)
	defer cancel()
	take := func(on bool, kind transport.Kind) (net.Conn, error) {
		if !on {
			return nil, nil
		}
		st, err := cs.streams.take(ctx, streamKey{cid, execID, kind})
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "stdio: %v", err)
		}
		p.closers = append(p.closers, st)
		return st, nil
	}
	stdin, err := take(want.Stdin, transport.KindStdin)
	if err != nil {
		return nil, err
	}
	stdout, err := take(want.Stdout, transport.KindStdout)
	if err != nil {
		return nil, err
	}
	stderr, err := take(want.Stderr && !want.Terminal, transport.KindStderr)
	if err != nil {
		return nil, err
	}

	var consoleParent *os.File
	if want.Terminal {
		parent, child, err := utils.NewSockPair("console")
		if err != nil {
			return nil, err
		}
		consoleParent = parent
		defer parent.Close()
		childEnds = append(childEnds, child)
		lp.ConsoleSocket = child
	} else {
		if lp.Stdin, err = p.inPipe(stdin, &childEnds); err != nil {
			return nil, err
		}
		if lp.Stdout, err = p.outPipe(stdout, &childEnds); err != nil {
			return nil, err
		}
		if lp.Stderr, err = p.outPipe(stderr, &childEnds); err != nil {
			return nil, err
		}
	}
	// The reaper leaves the process (and libcontainer's helpers while it
	// starts) to their waiters.
	started := cs.reaper.starting()
	proc, pid, err := start(lp)
	if err != nil {
		started(0)
		return nil, status.Errorf(codes.FailedPrecondition, "start process: %v", err)
	}
	p.p, p.pid = proc, pid
	started(p.pid)
	if consoleParent != nil {
		master, err := utils.RecvFile(consoleParent)
		if err != nil {
			proc.Signal(unix.SIGKILL)
			proc.Wait()
			cs.reaper.waited(p.pid)
			return nil, status.Errorf(codes.Internal, "receive terminal: %v", err)
		}
		p.console = master
		p.closers = append(p.closers, master)
		if stdin != nil {
			go func() { io.Copy(master, stdin) }()
		}
		if stdout != nil {
			p.copyOut(stdout, master)
		}
	}
	go p.wait()
	return p, nil
}

// inPipe gives the process a pipe fed from st, or /dev/null.
func (p *process) inPipe(st net.Conn, childEnds *[]*os.File) (*os.File, error) {
	if st == nil {
		return devNull(childEnds)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	*childEnds = append(*childEnds, r)
	go func() {
		io.Copy(w, st)
		w.Close() // the process sees EOF
	}()
	return r, nil
}

// outPipe gives the process a pipe drained into st, or /dev/null.
func (p *process) outPipe(st net.Conn, childEnds *[]*os.File) (*os.File, error) {
	if st == nil {
		return devNull(childEnds)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	*childEnds = append(*childEnds, w)
	p.copyOut(st, r)
	return w, nil
}

func (p *process) copyOut(st net.Conn, r io.ReadCloser) {
	p.output.Add(1)
	go func() {
		defer p.output.Done()
		io.Copy(st, r)
		r.Close()
		st.Close() // half-close: the host sees EOF
	}()
}

func devNull(childEnds *[]*os.File) (*os.File, error) {
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err == nil {
		*childEnds = append(*childEnds, f)
	}
	return f, err
}

func (p *process) resize(w, h uint32) error {
	if p.console == nil {
		return fmt.Errorf("process has no terminal")
	}
	if w > 0xffff || h > 0xffff {
		return fmt.Errorf("window size %dx%d out of range", w, h)
	}
	return unix.IoctlSetWinsize(int(p.console.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(w), Row: uint16(h)})
}

func (p *process) closeStreams() {
	for _, c := range p.closers {
		c.Close()
	}
}

// wait reaps the process and records its status as runc reports it.
func (p *process) wait() {
	st, _ := p.p.Wait()
	p.reaper.waited(p.pid)
	resp := &agentv1.WaitResponse{ExitStatus: 255}
	if st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				resp.Signal = uint32(ws.Signal())
				resp.ExitStatus = 128 + int32(ws.Signal())
			default:
				resp.ExitStatus = int32(ws.ExitStatus())
			}
		}
	}
	done := make(chan struct{})
	go func() { p.output.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputDrain):
	}
	if p.console != nil {
		p.console.Close()
	}
	p.status = resp
	close(p.exited)
}
