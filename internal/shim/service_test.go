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
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent/agenttest"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/testbundle"
	"github.com/lodgeruntime/lodge/internal/vmm"
	"github.com/lodgeruntime/lodge/internal/vmm/vmmtest"
)

// guest is the behaviour of the fake agents below: a process runs until
// it is sent SIGKILL or SIGTERM (or its container is deleted).
type guest struct {
	mu    sync.Mutex
	procs map[string]chan int32 // "container/exec" -> its exit, once
}

func (g *guest) proc(cid, exec string) chan int32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := cid + "/" + exec
	if g.procs[k] == nil {
		g.procs[k] = make(chan int32, 1)
	}
	return g.procs[k]
}

func (g *guest) end(cid, exec string, code int32) {
	select {
	case g.proc(cid, exec) <- code:
	default: // already ending
	}
}

func (g *guest) fake() *agenttest.Fake {
	return &agenttest.Fake{
		Wait: func(ctx context.Context, r *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
			select {
			case code := <-g.proc(r.ContainerId, r.ExecId):
				g.end(r.ContainerId, r.ExecId, code) // later Waits see it too
				resp := &agentv1.WaitResponse{ExitStatus: code}
				if code > 128 {
					resp.Signal = uint32(code - 128)
				}
				return resp, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		Signal: func(_ context.Context, r *agentv1.SignalRequest) (*agentv1.Empty, error) {
			if r.Signal == 9 || r.Signal == 15 {
				g.end(r.ContainerId, r.ExecId, 128+int32(r.Signal))
			}
			return &agentv1.Empty{}, nil
		},
	}
}

type noStdio struct{}

func (noStdio) Open(context.Context, StdioRequest) (sandbox.Stdio, io.Closer, error) {
	return sandbox.Stdio{}, io.NopCloser(nil), nil
}

// fixture is a task service over a real sandbox (a real share)
// on a fake VM whose agents follow guest.
type fixture struct {
	t     *testing.T
	svc   *Service
	drv   *vmmtest.Driver
	guest *guest
	root  string

	mu      sync.Mutex
	events  []string // topics published, in order
	exitIDs []string // the process ids of exit events, in order
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the share's mount namespace)")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &fixture{t: t, guest: &guest{procs: map[string]chan int32{}}, root: t.TempDir()}
	f.drv = &vmmtest.Driver{Agent: f.guest.fake, BootDelay: 50 * time.Millisecond}
	f.svc = New(Config{
		Log: log,
		NewSandbox: func(ctx context.Context, id string, _ *specs.Spec) (*sandbox.Sandbox, error) {
			return sandbox.Create(ctx, sandbox.Deps{Driver: f.drv, Log: log}, sandbox.Config{
				ID: "pod", Dir: filepath.Join(f.root, "vm"), BootTimeout: 10 * time.Second,
				VM: vmm.Config{Kernel: "vmlinux", Initrd: "initrd", VCPUs: 1, MemoryMiB: 256, Accel: vmm.AccelTCG}})
		},
		Stdio:   noStdio{},
		HostPID: func(string, string) uint32 { return 1 },
		Publish: func(topic string, ev proto.Message) {
			f.mu.Lock()
			f.events = append(f.events, topic)
			if e, ok := ev.(*eventExit); ok {
				f.exitIDs = append(f.exitIDs, e.ID)
			}
			f.mu.Unlock()
		},
	})
	t.Cleanup(func() {
		f.svc.Close(context.Background())
		if n := f.drv.Running(); n != 0 {
			t.Errorf("%d VMs left running", n)
		}
		if _, err := os.Stat(filepath.Join(f.root, "vm")); err == nil {
			t.Error("the sandbox's directory is left")
		}
	})
	return f
}

// bundle writes a bundle for a container that runs until killed.
func (f *fixture) bundle(id string) string {
	dir := filepath.Join(f.root, "bundles", id)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := testbundle.WriteSpec(dir, testbundle.Spec("sleep", "inf")); err != nil {
		f.t.Fatal(err)
	}
	return dir
}

func (f *fixture) create(id string) error {
	_, err := f.svc.Create(context.Background(), &taskapi.CreateTaskRequest{ID: id, Bundle: f.bundle(id)})
	return FromWire(err)
}

func (f *fixture) status(id string) apitypes.Status {
	f.t.Helper()
	r, err := f.svc.State(context.Background(), &taskapi.StateRequest{ID: id})
	if err != nil {
		f.t.Fatalf("state %s: %v", id, err)
	}
	return r.Status
}

// Twenty concurrent Creates in one service boot one VM and all run in it.
func TestServiceConcurrentCreatesBootOneVM(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f.create(fmt.Sprintf("c%d", i)) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("create c%d: %v", i, err)
		}
	}
	if n := f.drv.Started(); n != 1 {
		t.Fatalf("%d VMs booted for 20 Creates", n)
	}
	if n := f.svc.Tasks(); n != 20 {
		t.Fatalf("%d tasks, want 20", n)
	}
}

// Of two concurrent Starts (or Pauses) one proceeds and the other is
// refused cleanly; the container ends in one legal state.
func TestServiceConcurrentLifecycleCalls(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.create("c1"); err != nil {
		t.Fatal(err)
	}
	twice := func(call func() error) (ok, refused int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := FromWire(call())
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrPrecondition):
					refused++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}()
		}
		wg.Wait()
		return ok, refused
	}
	start := func() error { _, err := f.svc.Start(ctx, &taskapi.StartRequest{ID: "c1"}); return err }
	if ok, refused := twice(start); ok != 1 || refused != 1 {
		t.Fatalf("two Starts: %d succeeded, %d refused", ok, refused)
	}
	if st := f.status("c1"); st != apitypes.Status_RUNNING {
		t.Fatalf("after start: %s", statusName(st))
	}
	pause := func() error { _, err := f.svc.Pause(ctx, &taskapi.PauseRequest{ID: "c1"}); return err }
	if ok, refused := twice(pause); ok != 1 || refused != 1 {
		t.Fatalf("two Pauses: %d succeeded, %d refused", ok, refused)
	}
	if st := f.status("c1"); st != apitypes.Status_PAUSED {
		t.Fatalf("after pause: %s", statusName(st))
	}
	if _, err := f.svc.Resume(ctx, &taskapi.ResumeRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	// Start of an exec beside its Delete: either it starts and the delete
	// is refused (it runs), or it is deleted and the start finds nothing.
	for i := range 10 {
		e := fmt.Sprintf("e%d", i)
		if _, err := f.svc.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: e,
			Spec: processAny(t, testbundle.Spec("sleep", "inf").Process)}); err != nil {
			t.Fatal(err)
		}
		var startErr, delErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, startErr = f.svc.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: e}) }()
		go func() { defer wg.Done(); _, delErr = f.svc.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: e}) }()
		wg.Wait()
		startErr, delErr = FromWire(startErr), FromWire(delErr)
		switch {
		case startErr == nil && errors.Is(delErr, ErrPrecondition):
			// It runs: end it, then it can go.
			f.guest.end("c1", e, 137)
			if _, err := f.svc.Wait(ctx, &taskapi.WaitRequest{ID: "c1", ExecID: e}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: e}); err != nil {
				t.Fatalf("delete %s after its end: %v", e, err)
			}
		case delErr == nil && errors.Is(startErr, ErrNotFound):
		default:
			t.Fatalf("exec %s: start %v, delete %v: not one legal outcome", e, startErr, delErr)
		}
	}
	// Kill beside Delete: the delete is refused while the container runs,
	// or succeeds once it has stopped; either way it can be deleted after.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.svc.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: 9}) }()
	var delErr error
	go func() { defer wg.Done(); _, delErr = f.svc.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}) }()
	wg.Wait()
	if delErr != nil {
		if !errors.Is(FromWire(delErr), ErrPrecondition) {
			t.Fatalf("delete beside kill: %v", delErr)
		}
		if _, err := f.svc.Wait(ctx, &taskapi.WaitRequest{ID: "c1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}); err != nil {
			t.Fatalf("delete after the kill: %v", err)
		}
	}
	if _, err := f.svc.State(ctx, &taskapi.StateRequest{ID: "c1"}); !errors.Is(FromWire(err), ErrNotFound) {
		t.Fatalf("state after delete: %v", err)
	}
}

// The init's TaskExit comes after the exits of the execs still running.
func TestServiceInitExitAfterExecs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.create("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Start(ctx, &taskapi.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"e1", "e2"} {
		spec := testbundle.Spec("sleep", "inf").Process
		if _, err := f.svc.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: e, Spec: processAny(t, spec)}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: e}); err != nil {
			t.Fatal(err)
		}
	}
	f.guest.end("c1", "", 0) // the init exits first ...
	time.Sleep(100 * time.Millisecond)
	f.guest.end("c1", "e1", 137) // ... then the guest kills the execs
	f.guest.end("c1", "e2", 137)
	if _, err := f.svc.Wait(ctx, &taskapi.WaitRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		ev := append([]string(nil), f.events...)
		f.mu.Unlock()
		var exits int
		for _, e := range ev {
			if e == topicExit {
				exits++
			}
		}
		if exits == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %v: want three exits", ev)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// An exit event's ID is the exec's, or the container's for the init.
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.exitIDs); n != 3 || f.exitIDs[n-1] != "c1" {
		t.Errorf("exits published in the order %v, want the init's (c1) last", f.exitIDs)
	}
}

func processAny(t *testing.T, p *specs.Process) *anypb.Any {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}
}
