// Package filelock takes flock(2) locks on files, waiting for
// them (bounded by a context) or not. A lock dies with its process, so a
// killed holder never leaves one held.
package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy reports a lock another process holds (only when not waiting).
var ErrBusy = errors.New("held by another process")

// Lock takes the lock file at path, creating it; wait says whether to
// wait for it (until ctx ends). The returned func releases it.
func Lock(ctx context.Context, path string, wait bool) (func(), error) {
	f, err := LockFile(ctx, path, wait)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

// LockFile is Lock that returns the lock file itself (opened close-on-exec),
// held until every descriptor of it is closed: one handed to a child
// process keeps it held after the caller closes its own.
func LockFile(ctx context.Context, path string, wait bool) (*os.File, error) {
	return lockFile(ctx, path, wait, unix.LOCK_EX)
}

// SharedFile is LockFile for a shared lock: any number of holders of
// shared locks at once, none while an exclusive one is held.
func SharedFile(ctx context.Context, path string, wait bool) (*os.File, error) {
	return lockFile(ctx, path, wait, unix.LOCK_SH)
}

func lockFile(ctx context.Context, path string, wait bool, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if !wait {
			f.Close()
			return nil, fmt.Errorf("%w (%w)", ErrBusy, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
