// Package agent is the host side of the guest agent: it starts the stream
// multiplexer on the VM's agent channel, checks the agent's API version
// (the handshake) and offers typed calls that validate what the guest sends
// back. The client does not know whether the channel is virtio-serial or
// vsock.
package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"slices"
	"strings"

	"github.com/containerd/ttrpc"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// ErrIncompatible reports an agent that speaks another API version.
var ErrIncompatible = errors.New("incompatible agent")

// ErrBadReply reports a reply from the guest that fails validation.
var ErrBadReply = errors.New("invalid reply from guest agent")

// Limits on strings the guest sends back.
const (
	maxVersionLen = 128
	maxCaps       = 32
)

// Client talks to one guest agent.
type Client struct {
	sess       *transport.Session
	rpc        *ttrpc.Client
	health     agentv1.HealthService
	containers agentv1.ContainersService
	network    agentv1.NetworkService
	version    *agentv1.VersionResponse
}

// Connect starts the multiplexer on conn and performs the version
// handshake, which waits for the guest to boot: ctx bounds it.
func Connect(ctx context.Context, conn net.Conn) (*Client, error) {
	return ConnectWith(ctx, conn, DefaultDeadlines)
}

// ConnectWith is Connect with deadlines of its own for the calls.
func ConnectWith(ctx context.Context, conn net.Conn, d Deadlines) (*Client, error) {
	synced, err := transport.HostSync(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	sess, err := transport.HostSession(synced)
	if err != nil {
		conn.Close()
		return nil, err
	}
	st, err := transport.Open(sess, transport.Header{Kind: transport.KindRPC})
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("agent: open rpc stream: %w", err)
	}
	rpc := ttrpc.NewClient(st, ttrpc.WithUnaryClientInterceptor(d.edge))
	c := &Client{sess: sess, rpc: rpc,
		health: agentv1.NewHealthClient(rpc), containers: agentv1.NewContainersClient(rpc),
		network: agentv1.NewNetworkClient(rpc)}
	v, err := c.health.Version(ctx, &agentv1.VersionRequest{ApiVersion: agentv1.APIVersion})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("agent: handshake: %w", err)
	}
	if err := validateVersion(v); err != nil {
		c.Close()
		return nil, err
	}
	c.version = v
	return c, nil
}

// validateVersion accepts an agent of the host's major API version (the
// handshake's api_version is the major; what a major gains later is
// announced as a capability) and a reply within bounds.
func validateVersion(v *agentv1.VersionResponse) error {
	if v.ApiVersion != agentv1.APIVersion {
		return fmt.Errorf("%w: agent speaks API v%d, host speaks v%d (rebuild the guest with `lodge setup`)",
			ErrIncompatible, v.ApiVersion, agentv1.APIVersion)
	}
	if len(v.AgentVersion) > maxVersionLen || len(v.KernelRelease) > maxVersionLen || len(v.Capabilities) > maxCaps {
		return fmt.Errorf("%w: oversized version reply", ErrBadReply)
	}
	for _, c := range v.Capabilities {
		if len(c) > maxVersionLen {
			return fmt.Errorf("%w: oversized capability", ErrBadReply)
		}
	}
	return nil
}

// Version is the agent's handshake reply.
func (c *Client) Version() *agentv1.VersionResponse { return c.version }

// Has reports whether the agent offers an optional feature (see the
// Cap constants).
func (c *Client) Has(capability string) bool {
	return slices.Contains(c.version.Capabilities, capability)
}

// OpenStdio opens a stdio stream for a process; call it before Create.
func (c *Client) OpenStdio(containerID, execID string, kind transport.Kind) (net.Conn, error) {
	return transport.Open(c.sess, transport.Header{Kind: kind, ContainerID: containerID, ExecID: execID})
}

// OpenChanges opens a stream on which the agent sends a container's
// writable layer (with whole, its whole root) as a layer tar
// (transport.KindChanges), then closes it.
func (c *Client) OpenChanges(containerID string, whole bool) (net.Conn, error) {
	h := transport.Header{Kind: transport.KindChanges, ContainerID: containerID}
	if whole {
		h.ExecID = transport.ChangesWholeRoot
	}
	return transport.Open(c.sess, h)
}

// OpenWatch opens a stream on which the agent sends what changes below
// dir, an absolute path in container id (agentv1.CapWatch), one JSON event
// a line, and returns the agent's refusal as an error. Closing the stream
// ends the watch.
func (c *Client) OpenWatch(ctx context.Context, id, dir string, recursive bool) (net.Conn, error) {
	if !path.IsAbs(dir) || len(dir) > transport.MaxWatchPath || strings.ContainsAny(dir, "\x00\n") {
		return nil, fmt.Errorf("watch %q: not an absolute path", dir)
	}
	h := transport.Header{Kind: transport.KindWatch, ContainerID: id}
	if recursive {
		h.ExecID = transport.WatchRecursive
	}
	return c.openAnswered(ctx, h, dir+"\n", transport.WatchStatusOK, fmt.Sprintf("watch %s in container %s", dir, id))
}

// DialPort opens a TCP connection to 127.0.0.1:port in the guest's network
// namespace, carried on its own stream.
func (c *Client) DialPort(port uint16) (net.Conn, error) {
	return transport.Open(c.sess, transport.PortHeader("", port))
}

// maxPortStatus bounds the status line of a port stream.
const maxPortStatus = 512

// DialContainerPort opens a TCP connection to 127.0.0.1:port in the
// network namespace of the guest's container id (agentv1.CapPortIn), and
// returns the agent's refusal ("connection refused") as an error.
func (c *Client) DialContainerPort(ctx context.Context, id string, port uint16) (net.Conn, error) {
	return c.openAnswered(ctx, transport.PortHeader(id, port), "", transport.PortStatusOK, fmt.Sprintf("port %d in container %s", port, id))
}

// openAnswered opens a stream with header h, writes first on it, and reads
// the agent's status line: ok, or its refusal, returned as an error (what
// names the stream in other errors). ctx bounds the exchange.
func (c *Client) openAnswered(ctx context.Context, h transport.Header, first, ok, what string) (net.Conn, error) {
	st, err := transport.Open(c.sess, h)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	if first != "" {
		_, err = st.Write([]byte(first))
	}
	var line string
	if err == nil {
		line, err = readStatus(st)
	}
	if !stop() {
		st.Close()
		return nil, ctx.Err()
	}
	switch {
	case err != nil:
		st.Close()
		return nil, fmt.Errorf("%s: the agent's answer: %w", what, err)
	case line != ok:
		st.Close()
		return nil, errors.New(GuestText(line))
	}
	return st, nil
}

// readStatus reads one line, a byte at a time so that none of what follows
// it is taken.
func readStatus(st net.Conn) (string, error) {
	var b [1]byte
	line := make([]byte, 0, 64)
	for len(line) < maxPortStatus {
		if _, err := st.Read(b[:]); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
	return "", fmt.Errorf("%w: a status line longer than %d bytes", ErrBadReply, maxPortStatus)
}

// maxLogLine bounds one log record from the guest.
const maxLogLine = 4096

// ForwardLogs opens the agent's log stream and re-emits each record on log
// with source=guest, until the channel closes. Records are bounded and
// made printable: the guest writes them.
func (c *Client) ForwardLogs(log *slog.Logger) error {
	st, err := transport.Open(c.sess, transport.Header{Kind: transport.KindLog})
	if err != nil {
		return err
	}
	go func() {
		defer st.Close()
		r := bufio.NewReaderSize(st, maxLogLine)
		for {
			line, err := r.ReadSlice('\n')
			if len(line) > 0 {
				emitGuestLine(log, line)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return
			}
		}
	}()
	return nil
}

func emitGuestLine(log *slog.Logger, line []byte) {
	text := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, string(bytes.ToValidUTF8(line, []byte("?"))))
	level := slog.LevelDebug
	switch {
	case strings.Contains(text, " level=ERROR "):
		level = slog.LevelError
	case strings.Contains(text, " level=WARN "):
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "guest", "source", "guest", "record", text)
}

// Create creates a container in the guest and returns its guest PID.
func (c *Client) Create(ctx context.Context, req *agentv1.CreateRequest) (int, error) {
	r, err := c.containers.Create(ctx, req)
	if err != nil {
		return 0, err
	}
	if r.Pid <= 0 {
		return 0, fmt.Errorf("%w: pid %d", ErrBadReply, r.Pid)
	}
	return int(r.Pid), nil
}

// Start starts a created container.
func (c *Client) Start(ctx context.Context, id string) error {
	_, err := c.containers.Start(ctx, &agentv1.StartRequest{ContainerId: id})
	return err
}

// Exec starts a process in a container and returns its guest PID.
func (c *Client) Exec(ctx context.Context, req *agentv1.ExecRequest) (int, error) {
	r, err := c.containers.Exec(ctx, req)
	if err != nil {
		return 0, err
	}
	if r.Pid <= 0 {
		return 0, fmt.Errorf("%w: pid %d", ErrBadReply, r.Pid)
	}
	return int(r.Pid), nil
}

// Signal signals a process (exec "" is init), or all of a container's.
func (c *Client) Signal(ctx context.Context, id, exec string, sig uint32, all bool) error {
	_, err := c.containers.Signal(ctx, &agentv1.SignalRequest{ContainerId: id, ExecId: exec, Signal: sig, All: all})
	return err
}

// ResizePty sets a terminal's window size.
func (c *Client) ResizePty(ctx context.Context, id, exec string, width, height uint32) error {
	_, err := c.containers.ResizePty(ctx, &agentv1.ResizePtyRequest{ContainerId: id, ExecId: exec, Width: width, Height: height})
	return err
}

// Pause freezes a container.
func (c *Client) Pause(ctx context.Context, id string) error {
	_, err := c.containers.Pause(ctx, &agentv1.ContainerRequest{ContainerId: id})
	return err
}

// Resume thaws a container.
func (c *Client) Resume(ctx context.Context, id string) error {
	_, err := c.containers.Resume(ctx, &agentv1.ContainerRequest{ContainerId: id})
	return err
}

// Reclaim drops a container's file cache in its guest
// (agentv1.CapReclaim) and returns how much it held before and after.
func (c *Client) Reclaim(ctx context.Context, id string) (before, after uint64, err error) {
	if !c.Has(agentv1.CapReclaim) {
		return 0, 0, fmt.Errorf("%w: the agent cannot reclaim a container's memory (rebuild the guest with `lodge setup`)", ErrIncompatible)
	}
	r, err := c.containers.Reclaim(ctx, &agentv1.ContainerRequest{ContainerId: id})
	if err != nil {
		return 0, 0, err
	}
	return r.FileBefore, r.FileAfter, nil
}

// maxPids bounds the process list a guest may return.
const maxPids = 1 << 16

// Pids lists a container's processes.
func (c *Client) Pids(ctx context.Context, id string) ([]*agentv1.ProcessInfo, error) {
	r, err := c.containers.Pids(ctx, &agentv1.ContainerRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	if err := validatePids(r); err != nil {
		return nil, err
	}
	return r.Processes, nil
}

func validatePids(r *agentv1.PidsResponse) error {
	if len(r.Processes) > maxPids {
		return fmt.Errorf("%w: %d processes", ErrBadReply, len(r.Processes))
	}
	for _, p := range r.Processes {
		if p.Pid <= 0 || len(p.Command) > 256 {
			return fmt.Errorf("%w: process %d", ErrBadReply, p.Pid)
		}
	}
	return nil
}

// Stats reads a container's cgroup counters.
func (c *Client) Stats(ctx context.Context, id string) (*agentv1.StatsResponse, error) {
	return c.containers.Stats(ctx, &agentv1.ContainerRequest{ContainerId: id})
}

// Update changes a container's resources (an OCI LinuxResources as JSON).
func (c *Client) Update(ctx context.Context, id string, resources []byte) error {
	_, err := c.containers.Update(ctx, &agentv1.UpdateRequest{ContainerId: id, Resources: resources})
	return err
}

// ConfigureNetwork gives the guest the pod's interfaces and routes.
func (c *Client) ConfigureNetwork(ctx context.Context, req *agentv1.NetworkRequest) error {
	_, err := c.network.Configure(ctx, req)
	return err
}

// Identify gives the guest its own seed, clock, machine id and hostname
// (see agentv1.IdentifyRequest); an agent without it is refused, since a
// clone must not run anything with its template's identity.
func (c *Client) Identify(ctx context.Context, req *agentv1.IdentifyRequest) error {
	if !c.Has(agentv1.CapIdentify) {
		return fmt.Errorf("%w: the agent cannot take an identity (rebuild the guest with `lodge setup`)", ErrIncompatible)
	}
	_, err := c.health.Identify(ctx, req)
	return err
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code   int // runc's exit code: the status, or 128+signal
	Signal int // 0 unless killed by a signal
	// OOMKilled: the OOM killer killed a process of the container (init
	// only).
	OOMKilled bool
	// Reason, for an ending the guest did not report (its VM died, its
	// kernel panicked), says what happened; empty otherwise.
	Reason string
}

// Wait waits for a process (exec "" is init) to exit.
func (c *Client) Wait(ctx context.Context, id, exec string) (ExitStatus, error) {
	r, err := c.containers.Wait(ctx, &agentv1.WaitRequest{ContainerId: id, ExecId: exec})
	if err != nil {
		return ExitStatus{}, err
	}
	return validateExit(r)
}

func validateExit(r *agentv1.WaitResponse) (ExitStatus, error) {
	if r.ExitStatus < 0 || r.ExitStatus > 255 || r.Signal > 64 ||
		(r.Signal != 0 && r.ExitStatus != 128+int32(r.Signal)) {
		return ExitStatus{}, fmt.Errorf("%w: exit status %d, signal %d", ErrBadReply, r.ExitStatus, r.Signal)
	}
	return ExitStatus{Code: int(r.ExitStatus), Signal: int(r.Signal), OOMKilled: r.OomKilled}, nil
}

// Delete removes a container from the guest.
func (c *Client) Delete(ctx context.Context, id string) error {
	_, err := c.containers.Delete(ctx, &agentv1.ContainerRequest{ContainerId: id})
	return err
}

// Close ends the channel.
func (c *Client) Close() error {
	c.rpc.Close()
	return c.sess.Close()
}
