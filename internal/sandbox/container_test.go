package sandbox

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/agent/agenttest"
)

// A guest agent built without seccomp gets no container whose spec asks
// for a filter: the container would run unfiltered. The refusal comes
// before anything is made or sent to the guest.
func TestSeccompNeedsAnAgentWithSeccomp(t *testing.T) {
	t.Parallel()
	v := agenttest.GoodVersion()
	v.Capabilities = []string{agentv1.CapCgroup2}
	f := &agenttest.Fake{Version: v}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := agent.Connect(ctx, f.Pipe())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &Sandbox{id: "sb", log: log, phases: newPhases(log), agent: client, containers: map[string]*Container{}}
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}},
		Linux: &specs.Linux{Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}}}
	_, err = s.CreateContainer(ctx, ContainerConfig{ID: "c1", Spec: spec, Rootfs: t.TempDir()})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "seccomp") {
		t.Fatalf("CreateContainer: %v, want ErrUnsupported naming seccomp", err)
	}
	if n := f.Calls("Create"); n != 0 || len(s.containers) != 0 {
		t.Errorf("the guest got %d Create calls; %d containers recorded", n, len(s.containers))
	}
}
