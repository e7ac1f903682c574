package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// fakeAgent serves the agent API on the guest end of a pipe: the real
// multiplexer and ttrpc, with canned service behaviour.
type fakeAgent struct {
	version *agentv1.VersionResponse
	wait    *agentv1.WaitResponse
	stdout  chan transport.Header // headers of stdio streams received
}

func (f *fakeAgent) Version(context.Context, *agentv1.VersionRequest) (*agentv1.VersionResponse, error) {
	return f.version, nil
}
func (f *fakeAgent) Create(context.Context, *agentv1.CreateRequest) (*agentv1.CreateResponse, error) {
	return &agentv1.CreateResponse{Pid: 7}, nil
}
func (f *fakeAgent) Start(context.Context, *agentv1.StartRequest) (*agentv1.Empty, error) {
	return &agentv1.Empty{}, nil
}
func (f *fakeAgent) Signal(context.Context, *agentv1.SignalRequest) (*agentv1.Empty, error) {
	return &agentv1.Empty{}, nil
}
func (f *fakeAgent) Wait(context.Context, *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
	return f.wait, nil
}
func (f *fakeAgent) Delete(context.Context, *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return nil, errors.New("no such container")
}

func (f *fakeAgent) Exec(context.Context, *agentv1.ExecRequest) (*agentv1.CreateResponse, error) {
	return &agentv1.CreateResponse{Pid: 9}, nil
}
func (f *fakeAgent) ResizePty(context.Context, *agentv1.ResizePtyRequest) (*agentv1.Empty, error) {
	return &agentv1.Empty{}, nil
}
func (f *fakeAgent) Pause(context.Context, *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return &agentv1.Empty{}, nil
}
func (f *fakeAgent) Resume(context.Context, *agentv1.ContainerRequest) (*agentv1.Empty, error) {
	return &agentv1.Empty{}, nil
}
func (f *fakeAgent) Pids(context.Context, *agentv1.ContainerRequest) (*agentv1.PidsResponse, error) {
	return &agentv1.PidsResponse{Processes: []*agentv1.ProcessInfo{{Pid: 1, Command: "sh"}, {Pid: -4}}}, nil
}
func (f *fakeAgent) Stats(context.Context, *agentv1.ContainerRequest) (*agentv1.StatsResponse, error) {
	return &agentv1.StatsResponse{MemoryUsage: 42}, nil
}
func (f *fakeAgent) Update(context.Context, *agentv1.UpdateRequest) (*agentv1.Empty, error) {
	return &agentv1.Empty{}, nil
}

func (f *fakeAgent) serve(t *testing.T, conn net.Conn) {
	sess, err := transport.GuestSession(conn, nil)
	if err != nil {
		t.Error(err)
		return
	}
	srv, _ := ttrpc.NewServer()
	agentv1.RegisterHealthService(srv, f)
	agentv1.RegisterContainersService(srv, f)
	rpc := &pipeListener{conns: make(chan net.Conn, 1)}
	go srv.Serve(context.Background(), rpc)
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		h, err := transport.ReadHeader(st)
		if err != nil {
			st.Close()
			continue
		}
		if h.Kind == transport.KindRPC {
			rpc.conns <- st
			continue
		}
		f.stdout <- h
		st.Write([]byte("hello from " + h.ContainerID))
		st.Close()
	}
}

func connect(t *testing.T, f *fakeAgent) (*Client, error) {
	t.Helper()
	host, guest := net.Pipe()
	go f.serve(t, guest)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Connect(ctx, host)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func goodVersion() *agentv1.VersionResponse {
	return &agentv1.VersionResponse{ApiVersion: agentv1.APIVersion, AgentVersion: "test", KernelRelease: "6.1"}
}

func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	f := &fakeAgent{version: goodVersion(), wait: &agentv1.WaitResponse{ExitStatus: 137, Signal: 9},
		stdout: make(chan transport.Header, 1)}
	c, err := connect(t, f)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version().KernelRelease != "6.1" {
		t.Fatalf("version = %+v", c.Version())
	}
	st, err := c.OpenStdio("c1", "", transport.KindStdout)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(st)
	if string(out) != "hello from c1" {
		t.Fatalf("stdout stream carried %q", out)
	}
	if h := <-f.stdout; h.Kind != transport.KindStdout || h.ContainerID != "c1" {
		t.Fatalf("agent saw header %+v", h)
	}
	ctx := context.Background()
	if pid, err := c.Create(ctx, &agentv1.CreateRequest{ContainerId: "c1"}); err != nil || pid != 7 {
		t.Fatalf("Create = %d, %v", pid, err)
	}
	es, err := c.Wait(ctx, "c1", "")
	if err != nil || es != (ExitStatus{Code: 137, Signal: 9}) {
		t.Fatalf("Wait = %+v, %v", es, err)
	}
	if err := c.Delete(ctx, "c1"); err == nil {
		t.Fatal("Delete error from the agent was lost")
	}
	if _, err := c.Pids(ctx, "c1"); !errors.Is(err, ErrBadReply) {
		t.Fatalf("Pids with a negative pid = %v, want ErrBadReply", err)
	}
	if pid, err := c.Exec(ctx, &agentv1.ExecRequest{ContainerId: "c1", ExecId: "e1"}); err != nil || pid != 9 {
		t.Fatalf("Exec = %d, %v", pid, err)
	}
}

func TestClientRejectsBadAgent(t *testing.T) {
	t.Parallel()
	old := goodVersion()
	old.ApiVersion = 2
	if _, err := connect(t, &fakeAgent{version: old}); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("Connect to a v2 agent = %v, want ErrIncompatible", err)
	}
	f := &fakeAgent{version: goodVersion(), wait: &agentv1.WaitResponse{ExitStatus: 3, Signal: 9}}
	c, err := connect(t, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(context.Background(), "c1", ""); !errors.Is(err, ErrBadReply) {
		t.Fatalf("Wait with inconsistent status = %v, want ErrBadReply", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	host, guest := net.Pipe() // a guest that never answers
	defer guest.Close()
	go io.Copy(io.Discard, guest)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Connect(ctx, host); err == nil {
		t.Fatal("Connect succeeded with a silent guest")
	}
}

// FuzzVersionReply and FuzzWaitReply decode arbitrary bytes as the guest's
// replies: no panic, and anything accepted is within bounds.
func FuzzVersionReply(f *testing.F) {
	b, _ := proto.Marshal(goodVersion())
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var v agentv1.VersionResponse
		if proto.Unmarshal(data, &v) != nil {
			return
		}
		if validateVersion(&v) == nil && (len(v.AgentVersion) > maxVersionLen || len(v.Capabilities) > maxCaps) {
			t.Fatalf("accepted oversized reply %+v", &v)
		}
	})
}

func FuzzWaitReply(f *testing.F) {
	b, _ := proto.Marshal(&agentv1.WaitResponse{ExitStatus: 130, Signal: 2})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r agentv1.WaitResponse
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		es, err := validateExit(&r)
		if err == nil && (es.Code < 0 || es.Code > 255) {
			t.Fatalf("accepted exit code %d", es.Code)
		}
	})
}

// pipeListener hands accepted rpc streams to the ttrpc server.
type pipeListener struct{ conns chan net.Conn }

func (l *pipeListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *pipeListener) Close() error   { return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe"} }

func FuzzPidsReply(f *testing.F) {
	b, _ := proto.Marshal(&agentv1.PidsResponse{Processes: []*agentv1.ProcessInfo{{Pid: 1, Command: "sh"}}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r agentv1.PidsResponse
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		if err := validatePids(&r); err == nil {
			for _, p := range r.Processes {
				if p.Pid <= 0 || len(p.Command) > 256 {
					t.Fatalf("accepted %+v", p)
				}
			}
		}
	})
}

// FuzzGuestLogLine: a guest log record never panics the host and never
// carries control characters into the host's log.
func FuzzGuestLogLine(f *testing.F) {
	f.Add([]byte("time=x level=WARN msg=\"hi\x1b[2J\"\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		var buf bytes.Buffer
		emitGuestLine(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), line)
		var rec struct{ Record string }
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		for _, r := range rec.Record {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character %U in %q", r, rec.Record)
			}
		}
	})
}
