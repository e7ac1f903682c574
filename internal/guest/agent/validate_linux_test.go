package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
)

// What the host sends is checked before the agent acts on it: each bad
// request is refused with InvalidArgument (or NotFound), nothing is mounted
// or recorded.
func TestGuestRefusesBadRequests(t *testing.T) {
	t.Parallel()
	cs := newContainers(Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), StateDir: t.TempDir(),
		SharesDir: t.TempDir()}, newStreams())
	good := []byte(`{"process":{"args":["sh"]}}`)
	share := &agentv1.Rootfs{ShareTag: "lodge-shared", Path: "c1/rootfs"}
	ctx := context.Background()
	creates := []struct {
		name string
		req  *agentv1.CreateRequest
	}{
		{"bad id", &agentv1.CreateRequest{ContainerId: "../c", Spec: good, Rootfs: share}},
		{"empty id", &agentv1.CreateRequest{Spec: good, Rootfs: share}},
		{"spec not JSON", &agentv1.CreateRequest{ContainerId: "c1", Spec: []byte("{"), Rootfs: share}},
		{"no args", &agentv1.CreateRequest{ContainerId: "c1", Spec: []byte(`{"process":{}}`), Rootfs: share}},
		{"no rootfs", &agentv1.CreateRequest{ContainerId: "c1", Spec: good}},
		{"bad share tag", &agentv1.CreateRequest{ContainerId: "c1", Spec: good, Rootfs: &agentv1.Rootfs{ShareTag: "a/b", Path: "c1"}}},
		{"rootfs escapes the share", &agentv1.CreateRequest{ContainerId: "c1", Spec: good, Rootfs: &agentv1.Rootfs{ShareTag: "lodge-shared", Path: "../../etc"}}},
		{"absolute rootfs", &agentv1.CreateRequest{ContainerId: "c1", Spec: good, Rootfs: &agentv1.Rootfs{ShareTag: "lodge-shared", Path: "/etc"}}},
	}
	for _, tc := range creates {
		_, err := cs.Create(ctx, tc.req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Create, %s: %v, want InvalidArgument", tc.name, err)
		}
	}
	if len(cs.byID) != 0 || len(cs.shares) != 0 {
		t.Errorf("refused creates left %d containers, %d shares mounted", len(cs.byID), len(cs.shares))
	}
	for name, err := range map[string]error{
		"exec in an unknown container": func() error {
			_, err := cs.Exec(ctx, &agentv1.ExecRequest{ContainerId: "none", ExecId: "e1", Process: good})
			return err
		}(),
		"signal an unknown container": func() error {
			_, err := cs.Signal(ctx, &agentv1.SignalRequest{ContainerId: "none", Signal: 9})
			return err
		}(),
		"wait for an unknown container": func() error {
			_, err := cs.Wait(ctx, &agentv1.WaitRequest{ContainerId: "none"})
			return err
		}(),
	} {
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s: %v, want NotFound", name, err)
		}
	}
}

func TestShareRelative(t *testing.T) {
	t.Parallel()
	for src, ok := range map[string]bool{
		"c1/rootfs": true, "c1/mounts/0/data": true,
		"": false, "/etc": false, "../etc": false, "c1/../../etc": false, "c1/..": false,
	} {
		_, err := shareRelative("/run/lodge/shares/lodge-shared", src)
		if (err == nil) != ok {
			t.Errorf("shareRelative(%q): %v, want ok=%v", src, err, ok)
		}
	}
}

// Identify takes only a sane identity from the host: a seed of bounded
// size, a machine id of 32 hex digits, a hostname, a positive time.
func TestValidateIdentify(t *testing.T) {
	t.Parallel()
	good := func() *agentv1.IdentifyRequest {
		return &agentv1.IdentifyRequest{Seed: make([]byte, 64), TimeUnixNano: 1, MachineId: "0123456789abcdef0123456789abcdef",
			Hostname: "lodge-1a2b"}
	}
	if err := validateIdentify(good()); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*agentv1.IdentifyRequest){
		"short seed":     func(r *agentv1.IdentifyRequest) { r.Seed = make([]byte, 8) },
		"huge seed":      func(r *agentv1.IdentifyRequest) { r.Seed = make([]byte, 1<<20) },
		"machine id":     func(r *agentv1.IdentifyRequest) { r.MachineId = "../../etc/passwd" },
		"hostname slash": func(r *agentv1.IdentifyRequest) { r.Hostname = "a/b" },
		"long hostname":  func(r *agentv1.IdentifyRequest) { r.Hostname = strings.Repeat("a", 65) },
		"no time":        func(r *agentv1.IdentifyRequest) { r.TimeUnixNano = 0 },
	} {
		r := good()
		mod(r)
		if err := validateIdentify(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
