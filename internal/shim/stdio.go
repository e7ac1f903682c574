package shim

import (
	"context"
	"io"

	"github.com/lodgeruntime/lodge/internal/sandbox"
)

// StdioRequest names a process's stdio as the task API does: strings whose
// meaning belongs to the front end (containerd's fifo paths; the CLI's
// inherited or passed file descriptors).
type StdioRequest struct {
	ID, ExecID            string
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// StdioOpener opens a process's stdio. The closer releases everything it
// opened (after the process's output is drained).
type StdioOpener interface {
	Open(ctx context.Context, r StdioRequest) (sandbox.Stdio, io.Closer, error)
}
