package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/agent/agenttest"
	"github.com/lodgeruntime/lodge/internal/transport"
)

func connectFake(t *testing.T, f *agenttest.Fake, d agent.Deadlines) *agent.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := agent.ConnectWith(ctx, f.Pipe(), d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// The guest's status code picks one of the agent's kinds; a code with no
// kind of its own (or one the guest should never send) is ErrGuest, and
// none reaches the caller as a status it could pass on.
func TestGuestCodesMapToKinds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code codes.Code
		want error
	}{
		{codes.NotFound, agent.ErrNotFound},
		{codes.AlreadyExists, agent.ErrExists},
		{codes.InvalidArgument, agent.ErrInvalid},
		{codes.FailedPrecondition, agent.ErrState},
		{codes.Unimplemented, agent.ErrUnimplemented},
		{codes.Internal, agent.ErrGuest},
		{codes.PermissionDenied, agent.ErrGuest},
		{codes.Unauthenticated, agent.ErrGuest},
		{codes.DeadlineExceeded, agent.ErrGuest}, // the guest's claim, not the host's deadline
		{codes.Code(99), agent.ErrGuest},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			t.Parallel()
			f := &agenttest.Fake{Delete: func(context.Context, *agentv1.ContainerRequest) (*agentv1.Empty, error) {
				return nil, status.Error(tc.code, "guest says no")
			}}
			err := connectFake(t, f, agent.DefaultDeadlines).Delete(context.Background(), "c1")
			if !errors.Is(err, tc.want) {
				t.Fatalf("guest code %s: %v, want %v", tc.code, err, tc.want)
			}
			if _, ok := status.FromError(err); ok {
				t.Errorf("guest code %s reached the caller as a status: %v", tc.code, err)
			}
			if !strings.Contains(err.Error(), "guest says no") {
				t.Errorf("the guest's words are lost: %v", err)
			}
		})
	}
}

// A 1 MiB message full of control bytes, escape sequences and invalid
// UTF-8 comes out capped and printable.
func TestGuestTextCappedAndEscaped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for b.Len() < 1<<20 {
		// (protobuf carries only valid UTF-8; GuestText's own test has the rest)
		b.WriteString("\x1b[2J\x1b]0;pwned\x07\r\n\x00\u202eevil\x7f")
	}
	msg := b.String()
	f := &agenttest.Fake{Start: func(context.Context, *agentv1.StartRequest) (*agentv1.Empty, error) {
		return nil, status.Error(codes.Internal, msg)
	}}
	err := connectFake(t, f, agent.DefaultDeadlines).Start(context.Background(), "c1")
	if !errors.Is(err, agent.ErrGuest) {
		t.Fatalf("Start: %v", err)
	}
	got := err.Error()
	if len(got) > 2048 {
		t.Errorf("error of %d bytes from a 1 MiB guest message", len(got))
	}
	if !utf8.ValidString(got) {
		t.Errorf("invalid UTF-8 in %q", got)
	}
	for _, r := range got {
		if r != ' ' && !unicode.IsPrint(r) {
			t.Fatalf("non-printing %U in %q", r, got)
		}
	}
	if !strings.Contains(got, `\x1b[2J`) || !strings.Contains(got, `\u202e`) || !strings.Contains(got, "cut") {
		t.Errorf("escapes or the cut are not shown: %q", got[:200])
	}
}

func TestGuestTextKeepsPlainText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`exec: "/no/such": stat /no/such: no such file or directory`: `exec: "/no/such": stat /no/such: no such file or directory`,
		"größe ok":    "größe ok",
		`a\b`:         `a\\b`,
		"tab\there":   `tab\x09here`,
		"bad\xffutf8": `bad\xffutf8`,
	} {
		if got := agent.GuestText(in); got != want {
			t.Errorf("GuestText(%q) = %q, want %q", in, got, want)
		}
	}
}

// An agent that never answers Stats: the call ends with ErrNoAnswer at
// its deadline, and other calls on the same channel go on meanwhile.
func TestStuckCallHasADeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	f := &agenttest.Fake{Stats: func(ctx context.Context, _ *agentv1.ContainerRequest) (*agentv1.StatsResponse, error) {
		<-release
		return &agentv1.StatsResponse{}, nil
	}}
	c := connectFake(t, f, agent.Deadlines{Call: 300 * time.Millisecond, Create: time.Second})
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := c.Stats(context.Background(), "c1"); done <- err }()
	for i := 0; i < 5; i++ {
		if err := c.Signal(context.Background(), "c1", "", 15, false); err != nil {
			t.Fatalf("Signal while Stats hangs: %v", err)
		}
	}
	select {
	case err := <-done:
		if !errors.Is(err, agent.ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stats: %v, want ErrNoAnswer", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Stats returned after %s", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Stats never returned")
	}
}

// Wait is a long wait: no default deadline cuts it.
func TestWaitHasNoDefaultDeadline(t *testing.T) {
	t.Parallel()
	f := &agenttest.Fake{Wait: func(context.Context, *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
		time.Sleep(500 * time.Millisecond)
		return &agentv1.WaitResponse{ExitStatus: 3}, nil
	}}
	c := connectFake(t, f, agent.Deadlines{Call: 100 * time.Millisecond, Create: 100 * time.Millisecond})
	if es, err := c.Wait(context.Background(), "c1", ""); err != nil || es.Code != 3 {
		t.Fatalf("Wait = %+v, %v", es, err)
	}
	// The caller's own deadline still holds.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Wait(ctx, "c1", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past the caller's deadline: %v", err)
	}
}

// Compatibility is by major version; capabilities are read.
func TestVersionAndCapabilities(t *testing.T) {
	t.Parallel()
	v := agenttest.GoodVersion()
	v.Capabilities = []string{agentv1.CapCgroup2}
	c := connectFake(t, &agenttest.Fake{Version: v}, agent.DefaultDeadlines)
	if c.Has(agentv1.CapSeccomp) || !c.Has(agentv1.CapCgroup2) {
		t.Errorf("Has: seccomp %v cgroup2 %v, announced %v", c.Has(agentv1.CapSeccomp), c.Has(agentv1.CapCgroup2), v.Capabilities)
	}
	next := agenttest.GoodVersion()
	next.ApiVersion = agentv1.APIVersion + 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := agent.Connect(ctx, (&agenttest.Fake{Version: next}).Pipe()); !errors.Is(err, agent.ErrIncompatible) {
		t.Errorf("an agent of the next major: %v, want ErrIncompatible", err)
	}
}

func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	f := &agenttest.Fake{
		Wait: func(context.Context, *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
			return &agentv1.WaitResponse{ExitStatus: 137, Signal: 9}, nil
		},
		Create: func(context.Context, *agentv1.CreateRequest) (*agentv1.CreateResponse, error) {
			return &agentv1.CreateResponse{Pid: 7}, nil
		},
		Pids: func(context.Context, *agentv1.ContainerRequest) (*agentv1.PidsResponse, error) {
			return &agentv1.PidsResponse{Processes: []*agentv1.ProcessInfo{{Pid: 1, Command: "sh"}, {Pid: -4}}}, nil
		},
		Stream: func(h transport.Header, st net.Conn) {
			st.Write([]byte(fmt.Sprintf("%s stream of %s", h.Kind, h.ContainerID)))
			st.Close()
		},
	}
	c := connectFake(t, f, agent.DefaultDeadlines)
	if c.Version().KernelRelease != agenttest.GoodVersion().KernelRelease {
		t.Fatalf("version = %+v", c.Version())
	}
	st, err := c.OpenStdio("c1", "", transport.KindStdout)
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := io.ReadAll(st); string(out) != fmt.Sprintf("%s stream of c1", transport.KindStdout) {
		t.Fatalf("stdout stream carried %q", out)
	}
	ctx := context.Background()
	if pid, err := c.Create(ctx, &agentv1.CreateRequest{ContainerId: "c1"}); err != nil || pid != 7 {
		t.Fatalf("Create = %d, %v", pid, err)
	}
	es, err := c.Wait(ctx, "c1", "")
	if err != nil || es != (agent.ExitStatus{Code: 137, Signal: 9}) {
		t.Fatalf("Wait = %+v, %v", es, err)
	}
	if _, err := c.Pids(ctx, "c1"); !errors.Is(err, agent.ErrBadReply) {
		t.Fatalf("Pids with a negative pid = %v, want ErrBadReply", err)
	}
	if pid, err := c.Exec(ctx, &agentv1.ExecRequest{ContainerId: "c1", ExecId: "e1"}); err != nil || pid <= 0 {
		t.Fatalf("Exec = %d, %v", pid, err)
	}
	if f.Calls("Create") != 1 || f.Calls("Exec") != 1 {
		t.Errorf("calls: Create %d, Exec %d", f.Calls("Create"), f.Calls("Exec"))
	}
}

func TestClientRejectsInconsistentExit(t *testing.T) {
	t.Parallel()
	f := &agenttest.Fake{Wait: func(context.Context, *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
		return &agentv1.WaitResponse{ExitStatus: 3, Signal: 9}, nil
	}}
	if _, err := connectFake(t, f, agent.DefaultDeadlines).Wait(context.Background(), "c1", ""); !errors.Is(err, agent.ErrBadReply) {
		t.Fatalf("Wait with inconsistent status = %v, want ErrBadReply", err)
	}
}
