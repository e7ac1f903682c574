package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/runtimecli"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// A container's ports reached from the host without a network: lodge
// port-forward asks the container's supervisor for each connection, which
// has the guest's agent connect to 127.0.0.1:PORT in the container's own
// network namespace (runtimecli.DialPort). It works with --network none,
// where nothing on the host can reach the container otherwise.

// forward is one LOCAL:PORT of lodge port-forward.
type forward struct {
	local, remote uint16
}

// parseForwards reads kubectl's grammar: PORT (the same port here),
// LOCAL:PORT, :PORT (a free port here).
func parseForwards(args []string) ([]forward, error) {
	var out []forward
	for _, a := range args {
		local, remote, pair := strings.Cut(a, ":")
		if !pair {
			local, remote = a, a
		}
		r, err := strconv.ParseUint(remote, 10, 16)
		if err != nil || r == 0 {
			return nil, fmt.Errorf("%q: want [LOCAL]:PORT or PORT, ports 1-65535", a)
		}
		var l uint64
		if local != "" {
			if l, err = strconv.ParseUint(local, 10, 16); err != nil {
				return nil, fmt.Errorf("%q: want [LOCAL]:PORT or PORT, ports 1-65535 (0 or none here: a free one)", a)
			}
		}
		out = append(out, forward{local: uint16(l), remote: uint16(r)})
	}
	return out, nil
}

func portForwardCmd() *cobra.Command {
	var address string
	var stdio bool
	cmd := &cobra.Command{
		Use:   "port-forward [--address ADDR] CONTAINER [LOCAL]:PORT... | --stdio CONTAINER PORT",
		Short: "reach a container's ports from this host, even with --network none (kubectl's grammar; --stdio: one connection on stdin and stdout)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fwds, err := parseForwards(args[1:])
			if err != nil {
				return err
			}
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			if _, running := r.status(); !running {
				return fmt.Errorf("container %s is not running", r.Name)
			}
			if stdio {
				if len(fwds) != 1 || strings.Contains(args[1], ":") {
					return errors.New("--stdio: one PORT, no LOCAL")
				}
				if err := relayStdio(cmd.Context(), r.ID, fwds[0].remote, cmd.InOrStdin(), cmd.OutOrStdout()); err != nil {
					return fmt.Errorf("container %s: %w", r.Name, err)
				}
				return nil
			}
			return forwardPorts(cmd, r, address, fwds)
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "the host address to listen on")
	cmd.Flags().BoolVar(&stdio, "stdio", false, "relay one connection to PORT on stdin and stdout (as ssh -W), for programs that start lodge per connection")
	return cmd
}

// relayStdio copies between in and out and one connection to port, until
// both directions are done.
func relayStdio(ctx context.Context, id string, port uint16, in io.Reader, out io.Writer) error {
	c, err := runtimecli.DialPort(ctx, runtimeState, id, port)
	if err != nil {
		return err
	}
	defer c.Close()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		io.Copy(c, in)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	_, err = io.Copy(out, c)
	if f, ok := out.(*os.File); ok {
		// Our stdout may be a socket whose other end waits for the end
		// of what we send while it still sends (the sandbox service's).
		if sc, serr := net.FileConn(f); serr == nil {
			if cw, ok := sc.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			sc.Close()
		}
	}
	<-sent
	return err
}

// forwardPorts listens on address for each forward and relays every
// connection to the container, until interrupted or the container ends.
func forwardPorts(cmd *cobra.Command, r *ctrRecord, address string, fwds []forward) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, f := range fwds {
		l, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(int(f.local))))
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Fprintf(cmd.OutOrStdout(), "Forwarding from %s -> %d\n", l.Addr(), f.remote)
		go func(l net.Listener, port uint16) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					g, err := runtimecli.DialPort(ctx, runtimeState, r.ID, port)
					if err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "lodge: container %s: %v\n", r.Name, err)
						return
					}
					defer g.Close()
					transport.Splice(c, g)
				}()
			}
		}(l, f.remote)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if _, running := r.status(); !running {
				return fmt.Errorf("container %s ended", r.Name)
			}
		}
	}
}
