package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
)

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
	b, _ := proto.Marshal(&agentv1.VersionResponse{ApiVersion: agentv1.APIVersion, AgentVersion: "test", KernelRelease: "6.1"})
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
