package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// defaultHookTimeout applies to hooks without a timeout of their own.
const defaultHookTimeout = 60 * time.Second

// RunHooks runs hooks in order on the host with the container's state on
// stdin, as the runtime spec says. All of Lodge's hooks run on the host:
// createContainer and startContainer hooks, which the spec runs in the
// container's namespaces, cannot reach inside the VM. A failing hook stops
// the rest, except for poststart and poststop hooks, where the spec wants
// a warning and the remaining hooks run: their errors are joined.
func RunHooks(ctx context.Context, kind string, hooks []specs.Hook, st specs.State) error {
	return RunHooksIn(ctx, nil, kind, hooks, st)
}

// RunHooksIn is RunHooks with the hooks started in the network namespace
// netns (nil: this thread's): the runtime's, where this process has a
// namespace of its own (see runtimecli's supervisor).
func RunHooksIn(ctx context.Context, netns *os.File, kind string, hooks []specs.Hook, st specs.State) error {
	keepGoing := kind == "poststart" || kind == "poststop"
	var errs []error
	if len(hooks) == 0 {
		return nil
	}
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for i, h := range hooks {
		timeout := defaultHookTimeout
		if h.Timeout != nil {
			if *h.Timeout <= 0 {
				return fmt.Errorf("%w: %s hook %d: timeout must be positive", ErrInvalid, kind, i)
			}
			timeout = time.Duration(*h.Timeout) * time.Second
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		cmd := exec.CommandContext(hctx, h.Path)
		if len(h.Args) > 0 {
			cmd.Args = h.Args
		}
		cmd.Env = h.Env
		cmd.Stdin = bytes.NewReader(state)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := startIn(netns, cmd)
		if err == nil {
			err = cmd.Wait()
		}
		cancel()
		if err != nil {
			err = fmt.Errorf("%s hook %d (%s): %w: %s", kind, i, h.Path, err, bytes.TrimSpace(out.Bytes()))
			if !keepGoing {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// startIn starts cmd from a thread in the network namespace ns (nil: this
// one's); the thread is thrown away if it cannot be switched back.
func startIn(ns *os.File, cmd *exec.Cmd) error {
	if ns == nil {
		return cmd.Start()
	}
	runtime.LockOSThread()
	own, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer own.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter the runtime's network namespace: %w", err)
	}
	err = cmd.Start()
	if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return err
}
