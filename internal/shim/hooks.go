package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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
		err := cmd.Run()
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
