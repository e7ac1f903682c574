package runtimecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/lodgeruntime/lodge/internal/pty"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/shim"
)

// How the command line names stdio in task API requests:
//
//	fd://N               the supervisor's own descriptor N (0, 1, 2: the
//	                     caller's stdio, inherited at create)
//	fdpass://TOKEN/N     descriptor N passed over fd.sock (exec)
//	console://PATH       a terminal: the supervisor makes a host pty, sends
//	                     its master to the console socket at PATH, and
//	                     relays the slave to the guest's terminal
const (
	schemeFD      = "fd://"
	schemeFDPass  = "fdpass://"
	schemeConsole = "console://"
)

// resizePoll is how often a host pty's window size is checked: the master
// belongs to the caller, who resizes it without telling us.
const resizePoll = 300 * time.Millisecond

// cliStdio opens stdio for the supervisor's task service.
type cliStdio struct {
	fds    *fdStore
	log    *slog.Logger
	resize func(ctx context.Context, id, exec string, w, h uint32) error
}

var _ shim.StdioOpener = (*cliStdio)(nil)

type closers []func()

func (c closers) Close() error {
	for _, f := range c {
		f()
	}
	return nil
}

func (o *cliStdio) Open(ctx context.Context, r shim.StdioRequest) (sandbox.Stdio, io.Closer, error) {
	var cl closers
	if r.Terminal && strings.HasPrefix(r.Stdin, schemeConsole) {
		return o.console(r, strings.TrimPrefix(r.Stdin, schemeConsole))
	}
	passed := map[string][]*os.File{} // token -> files
	open := func(name string) (*os.File, error) {
		switch {
		case name == "":
			return nil, nil
		case strings.HasPrefix(name, schemeFD):
			n, err := strconv.Atoi(strings.TrimPrefix(name, schemeFD))
			if err != nil || n < 0 || n > 2 {
				return nil, fmt.Errorf("bad stdio %q", name)
			}
			return []*os.File{os.Stdin, os.Stdout, os.Stderr}[n], nil
		case strings.HasPrefix(name, schemeFDPass):
			token, idx, ok := strings.Cut(strings.TrimPrefix(name, schemeFDPass), "/")
			n, err := strconv.Atoi(idx)
			if !ok || err != nil || n < 0 || n > 2 {
				return nil, fmt.Errorf("bad stdio %q", name)
			}
			files, ok := passed[token]
			if !ok {
				if files, err = o.fds.take(token); err != nil {
					return nil, err
				}
				passed[token] = files
				cl = append(cl, func() {
					for _, f := range files {
						f.Close()
					}
				})
			}
			return files[n], nil
		}
		return nil, fmt.Errorf("unsupported stdio %q", name)
	}
	var files [3]*os.File
	for i, name := range []string{r.Stdin, r.Stdout, r.Stderr} {
		f, err := open(name)
		if err != nil {
			cl.Close()
			return sandbox.Stdio{}, nil, err
		}
		files[i] = f
	}
	s := sandbox.Stdio{Terminal: r.Terminal}
	if files[0] != nil {
		s.Stdin = files[0]
		if strings.HasPrefix(r.Stdin, schemeFDPass) {
			if own := ownTerminal(files[0]); own != nil {
				s.Stdin = own
				cl = append(cl, func() { own.Close() })
			}
		}
	}
	if files[1] != nil {
		s.Stdout = files[1]
	}
	if files[2] != nil {
		s.Stderr = files[2]
	}
	return s, cl, nil
}

// ownTerminal opens a passed stdin that is a terminal again, as an open
// file of this process's own, non-blocking, so that closing it ends a read
// blocked on it at once (nil for one that is no terminal, or cannot be
// opened again). A passed descriptor shares its open file with the caller,
// whose blocking mode is not ours to change, and a read blocked on a
// blocking descriptor keeps it open until something arrives: an exec's
// terminal stayed open in the supervisor after the exec ended, until its
// next keystroke.
func ownTerminal(f *os.File) *os.File {
	fd := int(f.Fd())
	if !term.IsTerminal(fd) {
		return nil
	}
	own, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(own), f.Name())
}

// console makes a host terminal for a process and hands its master to the
// caller's console socket.
func (o *cliStdio) console(r shim.StdioRequest, socket string) (sandbox.Stdio, io.Closer, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return sandbox.Stdio{}, nil, fmt.Errorf("allocate a terminal: %w", err)
	}
	// The guest's terminal is the container's line discipline (echo,
	// line editing, ^C as SIGINT, \n as \r\n): this one only relays, raw,
	// or every line would echo twice, end in \r\r\n, and a ^C would go to
	// this terminal's foreground process group, which has none.
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		master.Close()
		slave.Close()
		return sandbox.Stdio{}, nil, fmt.Errorf("make the relaying terminal raw: %w", err)
	}
	err = sendFile(socket, master)
	master.Close()
	if err != nil {
		slave.Close()
		return sandbox.Stdio{}, nil, err
	}
	stop := make(chan struct{})
	var once sync.Once
	go o.pollSize(r.ID, r.ExecID, slave, stop)
	closer := closers{func() { once.Do(func() { close(stop); slave.Close() }) }}
	return sandbox.Stdio{Stdin: slave, Stdout: slave, Terminal: true}, closer, nil
}

// pollSize forwards window size changes of a host terminal to the guest.
func (o *cliStdio) pollSize(id, exec string, slave *os.File, stop <-chan struct{}) {
	var lastW, lastH uint16
	t := time.NewTicker(resizePoll)
	defer t.Stop()
	for {
		w, h, err := winsize(slave)
		if err == nil && (w != lastW || h != lastH) && w > 0 && h > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := o.resize(ctx, id, exec, uint32(w), uint32(h))
			cancel()
			if err == nil {
				lastW, lastH = w, h
			} else if !errors.Is(err, shim.ErrNotFound) {
				o.log.Debug("resize terminal", "err", err)
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
