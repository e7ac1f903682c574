package runtimecli

import (
	"context"
	"fmt"
	"net"
	"os"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/lodgeruntime/lodge/internal/unixsock"
)

// sendFile sends f over the unix socket at path, as runc sends a terminal
// master to --console-socket: the file's name as data, the fd as rights.
func sendFile(path string, f *os.File) error {
	c, err := unixsock.Dial(context.Background(), path)
	if err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	defer c.Close()
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("console socket %s is not a unix socket", path)
	}
	_, _, err = uc.WriteMsgUnix([]byte(f.Name()), unix.UnixRights(int(f.Fd())), nil)
	return err
}

// winsize reads a terminal's window size.
func winsize(f *os.File) (uint16, uint16, error) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, err
	}
	return ws.Col, ws.Row, nil
}

// rawTerminal puts this process's stdin, where it is a terminal, in raw
// mode while a process with a terminal runs in the foreground (run, exec
// without --console-socket): the guest's terminal is that process's line
// discipline, as runc's container terminal is, so this one passes every
// key through (^C included) and adds no echo of its own. It returns what
// restores the terminal.
func rawTerminal() func() {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return func() {}
	}
	st, err := term.MakeRaw(fd)
	if err != nil {
		return func() {}
	}
	return func() { term.Restore(fd, st) }
}

// resizeFromStdin gives a process with a terminal in the guest the size of
// this process's terminal (its stdin), where stdin is one.
func resizeFromStdin(ctx context.Context, task taskapi.TaskService, id, exec string) {
	w, h, err := winsize(os.Stdin)
	if err != nil || w == 0 || h == 0 {
		return
	}
	task.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: id, ExecID: exec, Width: uint32(w), Height: uint32(h)})
}
