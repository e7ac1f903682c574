package shim

// A running container's controls: its processes, freezing, its changes,
// its terminal, its stdin and its resources.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"

	eventsapi "github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Pids lists a container's processes (guest PIDs).
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, toWire(err)
	}
	ps, err := t.c.Pids(ctx)
	if err != nil {
		return nil, toWire(err)
	}
	resp := &taskapi.PidsResponse{}
	for _, p := range ps {
		resp.Processes = append(resp.Processes, &apitypes.ProcessInfo{Pid: uint32(p.Pid)})
	}
	return resp, nil
}

// Pause freezes a running container.
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return empty(s.freeze(ctx, r.ID, true))
}

// Resume thaws a paused container.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return empty(s.freeze(ctx, r.ID, false))
}

func (s *Service) freeze(ctx context.Context, id string, pause bool) error {
	t, err := s.get(id)
	if err != nil {
		return err
	}
	op, do, topic := "pause", t.c.Pause, topicPaused
	if !pause {
		op, do, topic = "resume", t.c.Resume, topicResumed
	}
	if err := t.life.begin(id, op); err != nil {
		return err
	}
	err = do(ctx)
	t.life.end(op, err == nil)
	if err != nil {
		return err
	}
	if pause {
		s.cfg.Publish(topic, &eventPaused{ContainerID: id})
	} else {
		s.cfg.Publish(topic, &eventsapi.TaskResumed{ContainerID: id})
	}
	return nil
}

// Changes opens the stream of a container's writable layer from its guest
// (sandbox.Container.Changes): lodge commit and diff. Not part of the task
// API; lodge-runtime's supervisor serves it (runtimecli).
func (s *Service) Changes(id string, whole bool) (net.Conn, error) {
	t, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return t.c.Changes(whole)
}

// DialPort connects to 127.0.0.1:port in container id's network namespace
// in its guest (sandbox.Container.DialPort): lodge port-forward. Not part
// of the task API; lodge-runtime's supervisor serves it (runtimecli).
func (s *Service) DialPort(ctx context.Context, id string, port uint16) (net.Conn, error) {
	t, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return t.c.DialPort(ctx, port)
}

// Watch opens a stream of what changes below dir in container id, in its
// guest (sandbox.Container.Watch): lodge watch. Not part of the task API;
// lodge-runtime's supervisor serves it (runtimecli).
func (s *Service) Watch(ctx context.Context, id, dir string, recursive bool) (net.Conn, error) {
	t, err := s.get(id)
	if err != nil {
		return nil, err
	}
	return t.c.Watch(ctx, dir, recursive)
}

// Reclaim drops container id's file cache in its guest
// (sandbox.Container.Reclaim): lodge pause --reclaim. Not part of the task
// API; lodge-runtime's supervisor serves it (runtimecli).
func (s *Service) Reclaim(ctx context.Context, id string) (before, after uint64, err error) {
	t, err := s.get(id)
	if err != nil {
		return 0, 0, err
	}
	return t.c.Reclaim(ctx)
}

// Checkpoint is not supported.
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, toWire(fmt.Errorf("%w: checkpoint of a Lodge container", ErrNotImpl))
}

// ResizePty sets a terminal's window size.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, toWire(err)
	}
	p, err := t.proc(r.ExecID)
	if err != nil || t.started(p) == nil {
		return nil, toWire(fmt.Errorf("%w: process %q not running", ErrNotFound, r.ExecID))
	}
	return empty(t.started(p).Resize(ctx, r.Width, r.Height))
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toWire(err)
	}
	if sp := t.started(p); r.Stdin && sp != nil {
		sp.CloseStdin()
	}
	return &emptypb.Empty{}, nil
}

// Update changes a container's resources (an OCI LinuxResources, JSON).
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, toWire(err)
	}
	var res specs.LinuxResources
	if r.Resources == nil || json.Unmarshal(r.Resources.Value, &res) != nil {
		return nil, toWire(fmt.Errorf("%w: resources must be an OCI LinuxResources object", ErrInvalid))
	}
	return empty(t.c.Update(ctx, &res))
}
