// Package agenttest is a stand-in for the guest agent, for tests of the
// host side (the agent client, the sandbox, the task service). It serves
// the agent API with the real stream multiplexer and ttrpc on the guest end
// of an in-memory pipe; what each call answers is set per test, and a call
// without behaviour answers as a healthy agent would. It is also the
// hostile guest of the host's error-edge tests: it can answer anything.
package agenttest

import (
	"context"
	"net"
	"sync"

	"github.com/containerd/ttrpc"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// Fake is a guest agent. Set its fields before Pipe; the func fields, when
// set, answer their call.
type Fake struct {
	Version *agentv1.VersionResponse // nil: a good v1 reply

	Create func(context.Context, *agentv1.CreateRequest) (*agentv1.CreateResponse, error)
	Start  func(context.Context, *agentv1.StartRequest) (*agentv1.Empty, error)
	Exec   func(context.Context, *agentv1.ExecRequest) (*agentv1.CreateResponse, error)
	Signal func(context.Context, *agentv1.SignalRequest) (*agentv1.Empty, error)
	Wait   func(context.Context, *agentv1.WaitRequest) (*agentv1.WaitResponse, error)
	Pause  func(context.Context, *agentv1.ContainerRequest) (*agentv1.Empty, error)
	Pids   func(context.Context, *agentv1.ContainerRequest) (*agentv1.PidsResponse, error)
	Stats  func(context.Context, *agentv1.ContainerRequest) (*agentv1.StatsResponse, error)
	Delete func(context.Context, *agentv1.ContainerRequest) (*agentv1.Empty, error)

	// Stream answers a stdio or port stream the host opens (default: it
	// is closed).
	Stream func(transport.Header, net.Conn)

	mu    sync.Mutex
	calls map[string]int
}

// GoodVersion is the handshake reply of a current agent.
func GoodVersion() *agentv1.VersionResponse {
	return &agentv1.VersionResponse{ApiVersion: agentv1.APIVersion, AgentVersion: "agenttest",
		KernelRelease: "6.1.0-test", Capabilities: []string{"cgroup2", "seccomp", "network", "identify"}}
}

// Calls reports how many times method (e.g. "Stats") was called.
func (f *Fake) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *Fake) count(method string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[method]++
}

// Pipe starts the fake on one end of a pipe and returns the host's end,
// for agent.Connect. The fake ends when the host closes its end.
func (f *Fake) Pipe() net.Conn {
	host, guest := net.Pipe()
	go f.serve(guest)
	return host
}

// guestSession plays the guest's side of the boot handshake on conn and
// starts its multiplexer; on failure conn is closed and nil returned.
func guestSession(conn net.Conn) *transport.Session {
	synced, err := transport.GuestSync(conn)
	if err != nil {
		conn.Close()
		return nil
	}
	sess, err := transport.GuestSession(synced, nil)
	if err != nil {
		conn.Close()
		return nil
	}
	return sess
}

func (f *Fake) serve(conn net.Conn) {
	sess := guestSession(conn)
	if sess == nil {
		return
	}
	defer sess.Close()
	srv, err := ttrpc.NewServer()
	if err != nil {
		return
	}
	defer srv.Close()
	svc := &service{f: f}
	agentv1.RegisterHealthService(srv, svc)
	agentv1.RegisterContainersService(srv, svc)
	agentv1.RegisterNetworkService(srv, svc)
	rpc := &streamListener{conns: make(chan net.Conn), done: make(chan struct{})}
	defer rpc.Close()
	go srv.Serve(context.Background(), rpc)
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		h, err := transport.ReadHeader(st)
		switch {
		case err != nil:
			st.Close()
		case h.Kind == transport.KindRPC:
			select {
			case rpc.conns <- st:
			case <-rpc.done:
				return
			}
		case f.Stream != nil:
			go f.Stream(h, st)
		default:
			st.Close()
		}
	}
}

// service answers the agent API from a Fake.
type service struct{ f *Fake }

func call[Req, Resp any](f *Fake, name string, fn func(context.Context, Req) (Resp, error), ctx context.Context, req Req, def Resp) (Resp, error) {
	f.count(name)
	if fn != nil {
		return fn(ctx, req)
	}
	return def, nil
}

func (s *service) Version(context.Context, *agentv1.VersionRequest) (*agentv1.VersionResponse, error) {
	s.f.count("Version")
	if s.f.Version != nil {
		return s.f.Version, nil
	}
	return GoodVersion(), nil
}

func (s *service) Identify(ctx context.Context, r *agentv1.IdentifyRequest) (*agentv1.Empty, error) {
	return call(s.f, "Identify", nil, ctx, r, &agentv1.Empty{})
}

func (s *service) Create(ctx context.Context, r *agentv1.CreateRequest) (*agentv1.CreateResponse, error) {
	return call(s.f, "Create", s.f.Create, ctx, r, &agentv1.CreateResponse{Pid: 2})
}

func (s *service) Start(ctx context.Context, r *agentv1.StartRequest) (*agentv1.Empty, error) {
	return call(s.f, "Start", s.f.Start, ctx, r, &agentv1.Empty{})
}

func (s *service) Exec(ctx context.Context, r *agentv1.ExecRequest) (*agentv1.CreateResponse, error) {
	return call(s.f, "Exec", s.f.Exec, ctx, r, &agentv1.CreateResponse{Pid: 3})
}

func (s *service) Signal(ctx context.Context, r *agentv1.SignalRequest) (*agentv1.Empty, error) {
	return call(s.f, "Signal", s.f.Signal, ctx, r, &agentv1.Empty{})
}

func (s *service) Wait(ctx context.Context, r *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
	return call(s.f, "Wait", s.f.Wait, ctx, r, &agentv1.WaitResponse{})
}

func (s *service) ResizePty(ctx context.Context, r *agentv1.ResizePtyRequest) (*agentv1.Empty, error) {
	return call(s.f, "ResizePty", nil, ctx, r, &agentv1.Empty{})
}

func (s *service) Pause(ctx context.Context, r *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return call(s.f, "Pause", s.f.Pause, ctx, r, &agentv1.Empty{})
}

func (s *service) Resume(ctx context.Context, r *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return call(s.f, "Resume", nil, ctx, r, &agentv1.Empty{})
}

func (s *service) Pids(ctx context.Context, r *agentv1.ContainerRequest) (*agentv1.PidsResponse, error) {
	return call(s.f, "Pids", s.f.Pids, ctx, r, &agentv1.PidsResponse{Processes: []*agentv1.ProcessInfo{{Pid: 1, Command: "sh"}}})
}

func (s *service) Stats(ctx context.Context, r *agentv1.ContainerRequest) (*agentv1.StatsResponse, error) {
	return call(s.f, "Stats", s.f.Stats, ctx, r, &agentv1.StatsResponse{})
}

func (s *service) Update(ctx context.Context, r *agentv1.UpdateRequest) (*agentv1.Empty, error) {
	return call(s.f, "Update", nil, ctx, r, &agentv1.Empty{})
}

func (s *service) Reclaim(ctx context.Context, r *agentv1.ContainerRequest) (*agentv1.ReclaimResponse, error) {
	return call(s.f, "Reclaim", nil, ctx, r, &agentv1.ReclaimResponse{})
}

func (s *service) Delete(ctx context.Context, r *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return call(s.f, "Delete", s.f.Delete, ctx, r, &agentv1.Empty{})
}

func (s *service) Configure(ctx context.Context, r *agentv1.NetworkRequest) (*agentv1.Empty, error) {
	return call(s.f, "Configure", nil, ctx, r, &agentv1.Empty{})
}

// streamListener hands rpc streams to the ttrpc server.
type streamListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return &net.UnixAddr{Name: "agenttest"} }
