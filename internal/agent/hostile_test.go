package agent

import (
	"context"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent/agenttest"
)

// hostileCall is one call of the client, with what must hold of what it
// accepted.
type hostileCall struct {
	name string
	call func(ctx context.Context, t *testing.T, c *Client)
}

var hostileCalls = []hostileCall{
	{"Version", nil}, // the handshake itself
	{"Create", func(ctx context.Context, t *testing.T, c *Client) {
		if pid, err := c.Create(ctx, &agentv1.CreateRequest{ContainerId: "c"}); err == nil && pid <= 0 {
			t.Fatalf("accepted pid %d", pid)
		}
	}},
	{"Exec", func(ctx context.Context, t *testing.T, c *Client) {
		if pid, err := c.Exec(ctx, &agentv1.ExecRequest{ContainerId: "c", ExecId: "e"}); err == nil && pid <= 0 {
			t.Fatalf("accepted pid %d", pid)
		}
	}},
	{"Wait", func(ctx context.Context, t *testing.T, c *Client) {
		if es, err := c.Wait(ctx, "c", ""); err == nil && (es.Code < 0 || es.Code > 255) {
			t.Fatalf("accepted exit %+v", es)
		}
	}},
	{"Pids", func(ctx context.Context, t *testing.T, c *Client) {
		if ps, err := c.Pids(ctx, "c"); err == nil {
			for _, p := range ps {
				if p.Pid <= 0 || len(p.Command) > 256 {
					t.Fatalf("accepted %+v", p)
				}
			}
		}
	}},
	{"Stats", func(ctx context.Context, t *testing.T, c *Client) { c.Stats(ctx, "c") }},
	{"Start", func(ctx context.Context, t *testing.T, c *Client) { c.Start(ctx, "c") }},
	{"Signal", func(ctx context.Context, t *testing.T, c *Client) { c.Signal(ctx, "c", "", 15, false) }},
	{"ResizePty", func(ctx context.Context, t *testing.T, c *Client) { c.ResizePty(ctx, "c", "", 80, 24) }},
	{"Pause", func(ctx context.Context, t *testing.T, c *Client) { c.Pause(ctx, "c") }},
	{"Resume", func(ctx context.Context, t *testing.T, c *Client) { c.Resume(ctx, "c") }},
	{"Update", func(ctx context.Context, t *testing.T, c *Client) { c.Update(ctx, "c", []byte("{}")) }},
	{"Delete", func(ctx context.Context, t *testing.T, c *Client) { c.Delete(ctx, "c") }},
	{"Configure", func(ctx context.Context, t *testing.T, c *Client) {
		c.ConfigureNetwork(ctx, &agentv1.NetworkRequest{})
	}},
	{"Identify", func(ctx context.Context, t *testing.T, c *Client) { c.Identify(ctx, &agentv1.IdentifyRequest{}) }},
}

// hostileReply answers every call of a lying agent from (mode, data):
// a well-framed reply whose message is data; data as the raw stream, which
// then ends; or a frame whose length lies (longer than what follows, or
// past ttrpc's limit), which then ends.
func hostileReply(mode uint8, data []byte) func(string, uint32) ([]byte, bool) {
	return func(_ string, id uint32) ([]byte, bool) {
		switch mode % 4 {
		case 0:
			return agenttest.ResponseFrame(id, data), false
		case 1:
			return data, true
		case 2:
			return agenttest.Frame(id, 2, data, int64(len(data))+1+int64(mode)), true
		default:
			return agenttest.Frame(id, 2, data, 1<<31), true // 2 GiB announced
		}
	}
}

// runHostile makes one call against a lying agent: it must return (not
// hang, not panic) and accept nothing out of bounds.
func runHostile(t *testing.T, which, mode uint8, data []byte) {
	callHostile(t, 2*time.Second, which, mode, data)
}

// callHostile is runHostile with calls that time out after deadline (the
// fuzzer's inputs must stay short: an input that outlives -fuzztime fails
// the run).
func callHostile(t *testing.T, deadline time.Duration, which, mode uint8, data []byte) {
	c := hostileCalls[int(which)%len(hostileCalls)]
	raw := &agenttest.Raw{Handshake: c.call == nil, Reply: hostileReply(mode, data)}
	ctx, cancel := context.WithTimeout(context.Background(), deadline+time.Second)
	defer cancel()
	conn := raw.Pipe()
	defer conn.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl, err := ConnectWith(ctx, conn, Deadlines{Call: deadline, Create: deadline})
		if c.call == nil {
			if err == nil {
				v := cl.Version()
				if len(v.AgentVersion) > maxVersionLen || len(v.Capabilities) > maxCaps {
					t.Errorf("handshake accepted %+v", v)
				}
				cl.Close()
			}
			return
		}
		if err != nil {
			t.Errorf("handshake with a good reply: %v", err)
			return
		}
		defer cl.Close()
		c.call(ctx, t, cl)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s against a lying agent (mode %d, %d bytes) did not return", c.name, mode%4, len(data))
	}
}

// FuzzHostileReplies: every call of the client against an agent that
// answers arbitrary bytes, framed or not.
func FuzzHostileReplies(f *testing.F) {
	good, _ := proto.Marshal(&agentv1.WaitResponse{ExitStatus: 3})
	for i := range hostileCalls {
		for mode := range 4 {
			f.Add(uint8(i), uint8(mode), good)
		}
	}
	f.Add(uint8(0), uint8(0), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, which, mode uint8, data []byte) {
		callHostile(t, 500*time.Millisecond, which, mode, data)
	})
}

// The cases every run checks, named.
func TestHostileReplies(t *testing.T) {
	t.Parallel()
	huge := make([]byte, 1<<20)
	for i := range huge {
		huge[i] = 0x0a
	}
	badExit, _ := proto.Marshal(&agentv1.WaitResponse{ExitStatus: 300})
	negPid, _ := proto.Marshal(&agentv1.CreateResponse{Pid: -5})
	for _, tc := range []struct {
		name        string
		which, mode uint8
		data        []byte
	}{
		{"exit code out of range", 3, 0, badExit},
		{"negative pid", 1, 0, negPid},
		{"a 2 GiB frame announced", 5, 3, []byte("x")},
		{"a stream that stops mid-message", 1, 2, []byte{0x08}},
		{"a megabyte of garbage", 4, 1, huge},
		{"a reply of the wrong type", 4, 0, negPid},
		{"garbage for the handshake", 0, 1, []byte("not a frame at all")},
	} {
		t.Run(tc.name, func(t *testing.T) { runHostile(t, tc.which, tc.mode, tc.data) })
	}
}

// The host's memory stays bounded under a hostile agent: replies that
// announce 2 GiB frames and replies of a megabyte of garbage, many times
// over, allocate no more than what was actually sent, and nothing stays.
// (Not parallel: it reads the process's allocation counters.)
func TestHostileRepliesMemoryBounded(t *testing.T) {
	garbage := make([]byte, 1<<20)
	for i := range garbage {
		garbage[i] = 0x0a
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const rounds = 20
	for i := 0; i < rounds; i++ {
		runHostile(t, 5, 3, []byte("x")) // a 2 GiB frame announced
		runHostile(t, 4, 1, garbage)     // a megabyte of raw garbage
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	retained := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d rounds: %.1f MiB allocated, %.1f MiB retained", rounds, float64(allocated)/(1<<20), float64(retained)/(1<<20))
	// The garbage itself is 20 MiB, read through ttrpc's and yamux's
	// buffers (about 100 MiB allocated, 200 under -race); one allocation of
	// an announced length would be 2 GiB.
	if allocated > 512<<20 {
		t.Errorf("%d MiB allocated for %d hostile replies: a guest-chosen length was allocated", allocated>>20, 2*rounds)
	}
	if retained > 16<<20 {
		t.Errorf("%d MiB of heap retained after the hostile agents went", retained>>20)
	}
}
