package ctrshim

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/containerd/fifo"

	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/shim"
)

// fifoStdio opens the stdio containerd names in task requests: paths of
// fifos it created (ctr, CRI), or a file:// log URI for output.
type fifoStdio struct{}

var _ shim.StdioOpener = fifoStdio{}

type closers []io.Closer

func (c closers) Close() error {
	for i := len(c) - 1; i >= 0; i-- {
		c[i].Close()
	}
	return nil
}

func (fifoStdio) Open(ctx context.Context, r shim.StdioRequest) (_ sandbox.Stdio, _ io.Closer, retErr error) {
	var cl closers
	defer func() {
		if retErr != nil {
			cl.Close()
		}
	}()
	s := sandbox.Stdio{Terminal: r.Terminal}
	if r.Stdin != "" {
		// Non-blocking open: the writer (containerd) may come later.
		f, err := fifo.OpenFifo(context.WithoutCancel(ctx), r.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return s, nil, fmt.Errorf("open stdin %s: %w", r.Stdin, err)
		}
		cl = append(cl, f)
		s.Stdin = f
	}
	if u, ok := logURI(r.Stdout); ok {
		if u.Scheme != "file" {
			return s, nil, fmt.Errorf("%w: log URI scheme %q (use file:// or fifos)", shim.ErrNotImpl, u.Scheme)
		}
		f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return s, nil, fmt.Errorf("open log file: %w", err)
		}
		cl = append(cl, f)
		s.Stdout = f
		if !r.Terminal {
			s.Stderr = f
		}
		return s, cl, nil
	}
	open := func(path string) (io.WriteCloser, error) {
		if path == "" {
			return nil, nil
		}
		// containerd holds the read end open already.
		f, err := fifo.OpenFifo(context.WithoutCancel(ctx), path, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		cl = append(cl, f)
		return f, nil
	}
	out, err := open(r.Stdout)
	if err != nil {
		return s, nil, err
	}
	if out != nil {
		s.Stdout = out
	}
	if !r.Terminal {
		e, err := open(r.Stderr)
		if err != nil {
			return s, nil, err
		}
		if e != nil {
			s.Stderr = e
		}
	}
	return s, cl, nil
}

// logURI parses a stdio name that is a URI (binary:// or file://) rather
// than a fifo path.
func logURI(name string) (*url.URL, bool) {
	if !strings.Contains(name, "://") {
		return nil, false
	}
	u, err := url.Parse(name)
	if err != nil || u.Scheme == "" {
		return nil, false
	}
	return u, true
}
