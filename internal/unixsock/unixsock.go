// Package unixsock listens on and dials unix sockets at paths of any
// length. The kernel limits a socket address to 107 bytes, which a state
// directory under a deep root (Docker's runtime root with a 64-character
// container id) passes; such a path is reached through a descriptor of its
// directory, as /proc/self/fd/N/name, so the address stays short and the
// socket is still made in, and found in, the directory the caller named.
package unixsock

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxAddr is the longest path a sockaddr_un holds (108 with its NUL).
const maxAddr = 107

// within runs f with an address for path that the kernel accepts.
func within(path string, f func(addr string) error) error {
	if len(path) <= maxAddr {
		return f(path)
	}
	dir, base := filepath.Split(path)
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket directory %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(fd)
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
	if len(addr) > maxAddr {
		return fmt.Errorf("socket %s: its name %q is too long for a unix socket", path, base)
	}
	return f(addr)
}

// Listen makes a listening socket at path, replacing a stale one. Closing
// the listener does not remove the socket file: the caller does.
func Listen(path string) (*net.UnixListener, error) {
	os.Remove(path)
	var l *net.UnixListener
	err := within(path, func(addr string) (err error) {
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	return l, nil
}

// ListenFile is Listen for a socket that a child process inherits.
func ListenFile(path string) (*os.File, error) {
	l, err := Listen(path)
	if err != nil {
		return nil, err
	}
	f, err := l.File()
	l.Close()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return f, nil
}

// Dial connects to the socket at path.
func Dial(ctx context.Context, path string) (net.Conn, error) {
	var c net.Conn
	err := within(path, func(addr string) (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, "unix", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	return c, nil
}

// DialFile connects to the socket at path and returns the connection as a
// file, for a child process that is handed a connected socket.
func DialFile(ctx context.Context, path string) (*os.File, error) {
	c, err := Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	return f, nil
}

// Pair returns the two ends of a connected stream socket pair, both
// close-on-exec: one to keep (as a net.Conn through net.FileConn), one to
// hand to another process.
func Pair() (mine, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socket pair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "pair"), os.NewFile(uintptr(fds[1]), "pair-peer"), nil
}
