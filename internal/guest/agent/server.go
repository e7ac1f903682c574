package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/containerd/ttrpc"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// Server is the agent: it owns the multiplexed session and the containers.
type Server struct {
	reap       bool
	log        *slog.Logger
	sink       *LogSink
	streams    *streams
	containers *containers
	version    string
}

// Config configures a Server.
type Config struct {
	Log *slog.Logger
	// StateDir holds libcontainer state (a tmpfs in the guest).
	StateDir string
	// SharesDir is where shares are mounted, one directory per tag.
	SharesDir string
	// Version is lodge-agent's build version.
	Version string
	// Capabilities are the optional features this agent offers.
	Capabilities []string
	// Sink receives Log's records; a host log stream attaches to it.
	Sink *LogSink
	// Reap: the agent is PID 1 and reaps orphans (see reaper).
	Reap bool
	// NoDirect makes every container through libcontainer, none direct
	// (see direct_linux.go).
	NoDirect bool
	// DirectInit is the binary of a direct container's first step
	// (lodge-init, sealed); "" for the agent's own (DirectArg).
	DirectInit string
}

// New returns a server.
func New(cfg Config) *Server {
	st := newStreams()
	return &Server{
		reap:       cfg.Reap,
		log:        cfg.Log,
		sink:       cfg.Sink,
		streams:    st,
		version:    cfg.Version,
		containers: newContainers(cfg, st),
	}
}

// Serve runs one session of the agent on a byte stream from the host until
// it fails: it waits for the host's synchronisation (transport.GuestSync),
// then serves. The containers outlive the session: the agent serves the
// next one (a reconnecting host, or a clone's new host) with them.
func (s *Server) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	synced, err := transport.GuestSync(conn)
	if err != nil {
		conn.Close()
		return err
	}
	sess, err := transport.GuestSession(synced, slogWriter{s.log})
	if err != nil {
		return err
	}
	defer sess.Close()
	if s.reap {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		go s.containers.reaper.run(rctx)
	}

	rpc := newChanListener(sess.Addr())
	defer rpc.Close()
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	agentv1.RegisterHealthService(srv, &health{version: s.version, caps: s.containers.caps})
	agentv1.RegisterContainersService(srv, s.containers)
	agentv1.RegisterNetworkService(srv, network{log: s.log})
	go srv.Serve(ctx, rpc)
	defer srv.Close()

	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		go s.route(st, rpc)
	}
}

// route reads a stream's header and passes the stream to its user.
func (s *Server) route(st net.Conn, rpc *chanListener) {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := transport.ReadHeader(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		s.log.Warn("reject stream", "err", err)
		st.Close()
		return
	}
	switch h.Kind {
	case transport.KindRPC:
		if !rpc.deliver(st) {
			st.Close()
		}
	case transport.KindLog:
		if s.sink == nil {
			st.Close()
			return
		}
		s.sink.attach(st)
	case transport.KindPort:
		port, container, _ := transport.PortOf(h) // validated by ReadHeader
		if container != "" {
			go s.containers.forwardContainerPort(st, container, port, s.log)
		} else {
			go forwardPort(st, port, s.log)
		}
	case transport.KindChanges:
		defer st.Close()
		if err := s.containers.writeChanges(h.ContainerID, h.ExecID == transport.ChangesWholeRoot, st); err != nil {
			s.log.Warn("changes", "container_id", h.ContainerID, "err", err)
		}
	case transport.KindWatch:
		go s.containers.watchContainer(st, h.ContainerID, h.ExecID == transport.WatchRecursive, s.log)
	case transport.KindStdin, transport.KindStdout, transport.KindStderr:
		if err := s.streams.put(streamKey{h.ContainerID, h.ExecID, h.Kind}, st); err != nil {
			s.log.Warn("reject stream", "err", err)
			st.Close()
		}
	default:
		st.Close()
	}
}

// chanListener is a net.Listener fed with the session's rpc streams.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

type health struct {
	version string
	caps    []string
}

func (h *health) Version(ctx context.Context, req *agentv1.VersionRequest) (*agentv1.VersionResponse, error) {
	return &agentv1.VersionResponse{
		ApiVersion:    agentv1.APIVersion,
		AgentVersion:  h.version,
		Capabilities:  h.caps,
		KernelRelease: kernelRelease(),
	}, nil
}

// slogWriter sends the multiplexer's own log lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn("mux", "msg", string(p))
	return len(p), nil
}

var errNotFound = errors.New("not found")
