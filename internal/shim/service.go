package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/sandbox"
)

// Config wires the service to its front end.
type Config struct {
	Log *slog.Logger
	// NewSandbox boots the VM the first container (id, spec) runs in.
	NewSandbox func(ctx context.Context, id string, spec *specs.Spec) (*sandbox.Sandbox, error)
	// Placement says whether a container belongs to a pod; nil: never.
	Placement func(id string, spec *specs.Spec) *sandbox.Placement
	Stdio     StdioOpener
	// HostPID is the host pid reported for a task (the process a caller can
	// wait for; the container's processes live in the guest).
	HostPID func(id, execID string) uint32
	// HookNetNS, when set, is the network namespace the OCI hooks run in
	// (the runtime's, where this process has one of its own).
	HookNetNS *os.File
	// HooksRan, when set, is called once a container's create hooks have
	// run (an engine's hook may have made its network: Docker's); an error
	// fails the create.
	HooksRan func(ctx context.Context, id string) error
	// Publish receives task events; nil drops them.
	Publish func(topic string, ev proto.Message)
	// Exited is called once a container's init process has exited.
	Exited func(id string, es sandbox.ExitStatus)
	// StatusChanged is called, in order, with each state a container's
	// start, pause or resume leads to (its end is Exited's); nil: nobody
	// listens.
	StatusChanged func(id string, st apitypes.Status)
	// Layered, when set, may give a container's root as layer images
	// (lodge-runtime: a bundle made by `lodge` says so); nil result: it
	// does not.
	Layered func(bundle string) (*sandbox.LayeredRoot, error)
}

// Service implements containerd's task service over one sandbox.
type Service struct {
	cfg Config

	mu     sync.Mutex // guards sb, boot, closed and tasks
	sb     *sandbox.Sandbox
	boot   *bootGate        // the sandbox's boot while it runs
	closed bool             // Close ran: no sandbox is booted any more
	tasks  map[string]*task // nil value: being created
}

// bootGate lets the first Create boot the sandbox while later ones wait for
// its result, so that concurrent first Creates of a pod share one VM.
type bootGate struct {
	done chan struct{} // closed when the boot has ended
	err  error         // its error, once done
}

var _ taskapi.TaskService = (*Service)(nil)

// New returns a service with no sandbox yet.
func New(cfg Config) *Service {
	if cfg.Publish == nil {
		cfg.Publish = func(string, proto.Message) {}
	}
	if cfg.Exited == nil {
		cfg.Exited = func(string, sandbox.ExitStatus) {}
	}
	return &Service{cfg: cfg, tasks: map[string]*task{}}
}

// task is one container.
type task struct {
	id, bundle string
	spec       *specs.Spec
	c          *sandbox.Container
	init       *proc
	cleanups   []func() // host mounts of the rootfs, undone on delete

	life *lifecycle // created, running, paused, stopped; deleted

	mu    sync.Mutex // guards execs and each proc's p, closer and starting
	execs map[string]*proc
}

// proc is a task's init process or an exec'd one.
type proc struct {
	execID string
	spec   *specs.Process // exec'd processes only
	stdio  StdioRequest
	p      *sandbox.Process // nil until started
	// starting: a Start of this exec is under way (execs only).
	starting bool
	closer   io.Closer

	done     chan struct{} // closed when exited
	reported chan struct{} // closed once its exit event is published
	exit     sandbox.ExitStatus
	exitedAt time.Time
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (s *Service) get(id string) (*task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("%w: container %q", ErrNotFound, id)
	}
	return t, nil
}

func (t *task) proc(execID string) (*proc, error) {
	if execID == "" {
		return t.init, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.execs[execID]
	if p == nil {
		return nil, fmt.Errorf("%w: exec %q in container %s", ErrNotFound, execID, t.id)
	}
	return p, nil
}

// process finds a task and one of its processes.
func (s *Service) process(id, execID string) (*task, *proc, error) {
	t, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := t.proc(execID)
	return t, p, err
}

func (s *Service) statusChanged(id string) func(apitypes.Status) {
	if s.cfg.StatusChanged == nil {
		return nil
	}
	return func(st apitypes.Status) { s.cfg.StatusChanged(id, st) }
}

// started is p's process in the guest, nil until Start.
func (t *task) started(p *proc) *sandbox.Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	return p.p
}

func (s *Service) ociState(t *task, status string) specs.State {
	return specs.State{Version: specs.Version, ID: t.id, Status: specs.ContainerState(status),
		Pid: int(s.cfg.HostPID(t.id, "")), Bundle: t.bundle, Annotations: t.spec.Annotations}
}

// Create boots the sandbox if needed and creates the container in it.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	t, err := s.create(ctx, r)
	if err != nil {
		return nil, toWire(err)
	}
	return &taskapi.CreateTaskResponse{Pid: s.cfg.HostPID(t.id, "")}, nil
}

func (s *Service) create(ctx context.Context, r *taskapi.CreateTaskRequest) (*task, error) {
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("%w: restoring from a checkpoint", ErrNotImpl)
	}
	s.mu.Lock()
	if _, dup := s.tasks[r.ID]; dup {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: container %q", ErrExists, r.ID)
	}
	s.tasks[r.ID] = nil
	s.mu.Unlock()
	var cu rollback.Stack
	defer cu.Run()
	cu.Add(func() {
		s.mu.Lock()
		delete(s.tasks, r.ID)
		s.mu.Unlock()
	})

	b, err := oci.LoadBundle(r.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	sb, err := s.sandbox(ctx, r.ID, b.Spec)
	if err != nil {
		return nil, err
	}
	// Image layers become a root built in the guest; anything else is
	// mounted here and shared.
	var layered *sandbox.LayeredRoot
	undo := func() {}
	if s.cfg.Layered != nil {
		if layered, err = s.cfg.Layered(b.Dir); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if layered != nil {
		if !sb.CanLayer() {
			return nil, fmt.Errorf("%w: the bundle's root is layer images and this sandbox cannot build one (layers disabled in the config, or a guest agent without them: `make setup`)", ErrPrecondition)
		}
	} else if lower, ok := overlayLowers(r.Rootfs); ok && sb.CanLayer() {
		layered = &sandbox.LayeredRoot{Lower: lower, Writable: filepath.Join(b.Dir, writableImage)}
	} else if undo, err = mountRootfs(r.Rootfs, r.Bundle); err != nil {
		return nil, err
	}
	cu.Add(undo)
	stdio := StdioRequest{ID: r.ID, Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	sio, closer, err := s.cfg.Stdio.Open(ctx, stdio)
	if err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	cu.Add(func() { closer.Close() })
	cc := sandbox.ContainerConfig{ID: r.ID, Spec: b.Spec, Rootfs: b.Rootfs, Layers: layered, Stdio: sio}
	if s.cfg.Placement != nil {
		cc.Pod = s.cfg.Placement(r.ID, b.Spec)
	}
	c, err := sb.CreateContainer(ctx, cc)
	if err != nil {
		return nil, err
	}
	cu.Add(func() { c.Delete(context.Background()) })
	t := &task{id: r.ID, bundle: b.Dir, spec: b.Spec, c: c, life: newLifecycle(s.statusChanged(r.ID)),
		execs: map[string]*proc{}, cleanups: []func(){undo},
		init: &proc{stdio: stdio, p: c.Init(), closer: closer, done: make(chan struct{})}}
	if h := b.Spec.Hooks; h != nil {
		st := s.ociState(t, "created")
		for _, hs := range []struct {
			kind  string
			hooks []specs.Hook
		}{{"prestart", h.Prestart}, {"createRuntime", h.CreateRuntime}, {"createContainer", h.CreateContainer}} { //nolint:staticcheck // prestart is deprecated but still run
			if err := RunHooksIn(ctx, s.cfg.HookNetNS, hs.kind, hs.hooks, st); err != nil {
				return nil, err
			}
		}
	}
	if s.cfg.HooksRan != nil {
		if err := s.cfg.HooksRan(ctx, r.ID); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	s.tasks[r.ID] = t
	s.mu.Unlock()
	cu.Release()
	go s.waitInit(t)
	s.cfg.Publish(topicCreate, &eventCreate{ContainerID: r.ID, Bundle: b.Dir, Pid: s.cfg.HostPID(r.ID, "")})
	return t, nil
}

// sandbox returns the service's sandbox, booting it for the first task;
// Creates that come while it boots wait for that boot and share its VM (or
// its error).
func (s *Service) sandbox(ctx context.Context, id string, spec *specs.Spec) (*sandbox.Sandbox, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: the shim is shutting down", ErrPrecondition)
	}
	if sb := s.sb; sb != nil {
		s.mu.Unlock()
		return sb, nil
	}
	if g := s.boot; g != nil {
		s.mu.Unlock()
		select {
		case <-g.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if g.err != nil {
			return nil, g.err
		}
		return s.sandbox(ctx, id, spec)
	}
	g := &bootGate{done: make(chan struct{})}
	s.boot = g
	s.mu.Unlock()

	sb, err := s.cfg.NewSandbox(ctx, id, spec)
	s.mu.Lock()
	s.boot = nil
	if err == nil && s.closed {
		// Close came while the VM booted: it must not outlive the shim.
		err = fmt.Errorf("%w: the shim is shutting down", ErrPrecondition)
		defer sb.Destroy(context.Background())
	} else if err == nil {
		s.sb = sb
	}
	g.err = err
	close(g.done)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return sb, nil
}

// waitInit records the init process's exit.
func (s *Service) waitInit(t *task) {
	es, err := t.init.p.Wait(context.Background())
	if err != nil {
		s.cfg.Log.Error("container ended without a status", "container_id", t.id, "err", err)
		es = sandbox.ExitStatus{Code: 255, Reason: err.Error()}
	}
	// As containerd's runc shim: the init's exit is announced after those
	// of the execs still running (they end with it: the guest kills what
	// is left of a container whose init exited).
	s.awaitExecs(t)
	// Stopped before the exit is announced: a caller woken by Wait may
	// delete the container at once.
	if es.OOMKilled {
		s.cfg.Publish(topicOOM, &eventOOM{ContainerID: t.id})
	}
	t.life.stopped()
	s.finish(t, t.init, es)
	s.cfg.Publish(topicExit, &eventExit{ContainerID: t.id, ID: t.id, Pid: s.cfg.HostPID(t.id, ""),
		ExitStatus: uint32(es.Code), ExitedAt: timestamppb.New(t.init.exitedAt)})
	s.cfg.Exited(t.id, es)
}

// execReportWait bounds how long the init's exit waits for an exec's.
const execReportWait = 10 * time.Second

func (s *Service) awaitExecs(t *task) {
	t.mu.Lock()
	var running []*proc
	for _, p := range t.execs {
		if p.p != nil {
			running = append(running, p)
		}
	}
	t.mu.Unlock()
	deadline := time.After(execReportWait)
	for _, p := range running {
		select {
		case <-p.reported:
		case <-deadline:
			s.cfg.Log.Warn("exec exits not reported before the init's", "container_id", t.id)
			return
		}
	}
}

func (s *Service) finish(t *task, p *proc, es sandbox.ExitStatus) {
	p.exit, p.exitedAt = es, time.Now()
	close(p.done)
	if p.closer != nil {
		p.closer.Close()
	}
}

// Start runs a created container, or starts a declared exec.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, toWire(err)
	}
	if r.ExecID == "" {
		return &taskapi.StartResponse{Pid: s.cfg.HostPID(t.id, "")}, toWire(s.startInit(ctx, t))
	}
	return &taskapi.StartResponse{Pid: s.cfg.HostPID(t.id, r.ExecID)}, toWire(s.startExec(ctx, t, r.ExecID))
}

func (s *Service) startInit(ctx context.Context, t *task) (retErr error) {
	if err := t.life.begin(t.id, "start"); err != nil {
		return err
	}
	defer func() { t.life.end("start", retErr == nil) }()
	if h := t.spec.Hooks; h != nil {
		if err := RunHooksIn(ctx, s.cfg.HookNetNS, "startContainer", h.StartContainer, s.ociState(t, "created")); err != nil {
			return err
		}
	}
	if err := t.c.Start(ctx); err != nil {
		return err
	}
	if h := t.spec.Hooks; h != nil {
		if err := RunHooksIn(ctx, s.cfg.HookNetNS, "poststart", h.Poststart, s.ociState(t, "running")); err != nil {
			s.cfg.Log.Warn("poststart hook failed", "container_id", t.id, "err", err)
		}
	}
	s.cfg.Publish(topicStart, &eventStart{ContainerID: t.id, Pid: s.cfg.HostPID(t.id, "")})
	return nil
}

func (s *Service) startExec(ctx context.Context, t *task, execID string) error {
	// As runc: a created container takes an exec too (its namespaces and
	// root are made; lodge cp into a created container needs it).
	if st := t.life.Status(); st != apitypes.Status_RUNNING && st != apitypes.Status_CREATED {
		return fmt.Errorf("%w: container %s is %s, not running", ErrPrecondition, t.id, statusName(st))
	}
	// Claim the exec under the task's lock: a concurrent Start of it is
	// refused, and so is its Delete until the start has ended.
	t.mu.Lock()
	p := t.execs[execID]
	switch {
	case p == nil:
		t.mu.Unlock()
		return fmt.Errorf("%w: exec %q in container %s", ErrNotFound, execID, t.id)
	case p.p != nil || p.starting:
		t.mu.Unlock()
		return fmt.Errorf("%w: exec %s already started", ErrPrecondition, execID)
	}
	p.starting = true
	t.mu.Unlock()
	sp, closer, err := s.execInGuest(ctx, t, p)
	t.mu.Lock()
	p.starting = false
	if err == nil {
		p.p, p.closer = sp, closer
	}
	t.mu.Unlock()
	if err != nil {
		return err
	}
	go func() {
		es, err := sp.Wait(context.Background())
		if err != nil {
			es = sandbox.ExitStatus{Code: 255}
		}
		s.finish(t, p, es)
		s.cfg.Publish(topicExit, &eventExit{ContainerID: t.id, ID: execID, Pid: s.cfg.HostPID(t.id, execID),
			ExitStatus: uint32(es.Code), ExitedAt: timestamppb.New(p.exitedAt)})
		close(p.reported)
	}()
	s.cfg.Publish(topicExecStarted, &eventExecStarted{ContainerID: t.id, ExecID: execID, Pid: s.cfg.HostPID(t.id, execID)})
	return nil
}

func (s *Service) execInGuest(ctx context.Context, t *task, p *proc) (*sandbox.Process, io.Closer, error) {
	sio, closer, err := s.cfg.Stdio.Open(ctx, p.stdio)
	if err != nil {
		return nil, nil, fmt.Errorf("stdio: %w", err)
	}
	sp, err := t.c.Exec(ctx, sandbox.ExecConfig{ID: p.execID, Process: p.spec, Stdio: sio})
	if err != nil {
		closer.Close()
		return nil, nil, err
	}
	return sp, closer, nil
}

// Exec declares a process to run in a container; Start runs it.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, toWire(err)
	}
	if r.Spec == nil {
		return nil, toWire(fmt.Errorf("%w: exec %s has no process spec", ErrInvalid, r.ExecID))
	}
	var sp specs.Process
	if err := json.Unmarshal(r.Spec.Value, &sp); err != nil || len(sp.Args) == 0 {
		return nil, toWire(fmt.Errorf("%w: exec %s: process spec: %v", ErrInvalid, r.ExecID, err))
	}
	if sp.Terminal != r.Terminal {
		sp.Terminal = r.Terminal
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, dup := t.execs[r.ExecID]; dup || r.ExecID == "" {
		return nil, toWire(fmt.Errorf("%w: exec %q in container %s", ErrExists, r.ExecID, t.id))
	}
	t.execs[r.ExecID] = &proc{execID: r.ExecID, spec: &sp, done: make(chan struct{}), reported: make(chan struct{}),
		stdio: StdioRequest{ID: t.id, ExecID: r.ExecID, Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}}
	s.cfg.Publish(topicExecAdded, &eventExecAdded{ContainerID: t.id, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// Delete removes an exited exec, or a stopped (or never started)
// container.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	resp, err := s.delete(ctx, r)
	return resp, toWire(err)
}

func (s *Service) delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	t, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		t.mu.Lock()
		p := t.execs[r.ExecID]
		switch {
		case p == nil:
			t.mu.Unlock()
			return nil, fmt.Errorf("%w: exec %q in container %s", ErrNotFound, r.ExecID, t.id)
		case p.starting || (p.p != nil && !p.exited()):
			t.mu.Unlock()
			return nil, fmt.Errorf("%w: exec %s is still running", ErrPrecondition, r.ExecID)
		}
		delete(t.execs, r.ExecID)
		t.mu.Unlock()
		return &taskapi.DeleteResponse{Pid: s.cfg.HostPID(t.id, r.ExecID), ExitStatus: uint32(p.exit.Code),
			ExitedAt: timestamppb.New(p.exitedAt)}, nil
	}
	if err := t.life.begin(t.id, "delete"); err != nil {
		return nil, err
	}
	deleted := false
	defer func() { t.life.end("delete", deleted) }()
	if !t.init.exited() {
		// Never started: kill the waiting init, as runc delete does.
		t.init.p.Signal(ctx, 9)
		select {
		case <-t.init.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := t.c.Delete(ctx); err != nil {
		s.cfg.Log.Debug("delete in guest", "container_id", t.id, "err", err)
	}
	for _, f := range t.cleanups {
		f()
	}
	if h := t.spec.Hooks; h != nil {
		if err := RunHooksIn(ctx, s.cfg.HookNetNS, "poststop", h.Poststop, s.ociState(t, "stopped")); err != nil {
			s.cfg.Log.Warn("poststop hook failed", "container_id", t.id, "err", err)
		}
	}
	s.mu.Lock()
	delete(s.tasks, t.id)
	s.mu.Unlock()
	deleted = true
	s.cfg.Publish(topicDelete, &eventDelete{ContainerID: t.id, Pid: s.cfg.HostPID(t.id, ""),
		ExitStatus: uint32(t.init.exit.Code), ExitedAt: timestamppb.New(t.init.exitedAt)})
	return &taskapi.DeleteResponse{Pid: s.cfg.HostPID(t.id, ""), ExitStatus: uint32(t.init.exit.Code),
		ExitedAt: timestamppb.New(t.init.exitedAt)}, nil
}

// State reports a process's status.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toWire(err)
	}
	st := t.life.Status()
	switch {
	case p.exited():
		st = apitypes.Status_STOPPED
	case r.ExecID != "" && t.started(p) == nil:
		st = apitypes.Status_CREATED
	case r.ExecID != "":
		st = apitypes.Status_RUNNING
	}
	resp := &taskapi.StateResponse{ID: r.ID, ExecID: r.ExecID, Bundle: t.bundle, Pid: s.cfg.HostPID(t.id, r.ExecID),
		Status: st, Stdin: p.stdio.Stdin, Stdout: p.stdio.Stdout, Stderr: p.stdio.Stderr, Terminal: p.stdio.Terminal}
	if p.exited() {
		resp.ExitStatus, resp.ExitedAt = uint32(p.exit.Code), timestamppb.New(p.exitedAt)
	}
	return resp, nil
}

// Kill signals a process, or every process of a container.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	return empty(s.kill(ctx, r))
}

func (s *Service) kill(ctx context.Context, r *taskapi.KillRequest) error {
	t, err := s.get(r.ID)
	if err != nil {
		return err
	}
	p, err := t.proc(r.ExecID)
	if err != nil {
		return err
	}
	sp := t.started(p)
	if sp == nil {
		return fmt.Errorf("%w: exec %s is not started", ErrPrecondition, r.ExecID)
	}
	if p.exited() {
		return fmt.Errorf("%w: process already finished", ErrNotFound)
	}
	if r.All && r.ExecID == "" {
		err = t.c.SignalAll(ctx, int(r.Signal))
	} else {
		err = sp.Signal(ctx, int(r.Signal))
	}
	if errors.Is(err, agent.ErrNotFound) {
		// It exited between the check above and the signal.
		return fmt.Errorf("%w: process already finished", ErrNotFound)
	}
	if errors.Is(err, agent.ErrGone) {
		// A fatal signal may end the process, and the VM with it, before
		// the agent's answer arrives: the process's exit (which the VM's
		// end reports too) tells whether it was.
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
		}
	}
	return err
}

// Wait blocks until a process exits.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, toWire(err)
	}
	select {
	case <-p.done:
		return &taskapi.WaitResponse{ExitStatus: uint32(p.exit.Code), ExitedAt: timestamppb.New(p.exitedAt)}, nil
	case <-ctx.Done():
		return nil, toWire(ctx.Err())
	}
}

// Connect reports the serving process.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	return &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: s.cfg.HostPID(r.ID, ""), Version: "2"}, nil
}

// Tasks counts the containers the service holds.
func (s *Service) Tasks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tasks)
}

// Shutdown tears the sandbox down once no container is left.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 && !r.Now {
		return &emptypb.Empty{}, nil
	}
	return empty(s.Close(ctx))
}

// Close destroys the sandbox and everything in it.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	sb, tasks := s.sb, s.tasks
	s.sb, s.tasks, s.closed = nil, map[string]*task{}, true
	s.mu.Unlock()
	for _, t := range tasks {
		if t != nil {
			for _, f := range t.cleanups {
				f()
			}
		}
	}
	if sb == nil {
		return nil
	}
	return sb.Destroy(ctx)
}

func empty(err error) (*emptypb.Empty, error) {
	if err != nil {
		return nil, toWire(err)
	}
	return &emptypb.Empty{}, nil
}

func statusName(s apitypes.Status) string {
	switch s {
	case apitypes.Status_CREATED:
		return "created"
	case apitypes.Status_RUNNING:
		return "running"
	case apitypes.Status_PAUSED:
		return "paused"
	case apitypes.Status_STOPPED:
		return "stopped"
	}
	return "unknown"
}
