package ctrshim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/shim"
)

// Main runs the containerd-shim-lodge-v2 binary.
func Main() {
	if len(os.Args) == 2 && (os.Args[1] == "-info" || os.Args[1] == "--info") {
		if err := printInfo(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "containerd-shim-lodge-v2:", err)
			os.Exit(1)
		}
		return
	}
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn:   initTaskService,
	})
	// The shim waits for its own children (QEMU) with os/exec:
	// containerd's reaper would steal their exit statuses.
	cshim.RunManager(context.Background(), &manager{stateRoot: stateRoot()},
		func(c *cshim.Config) { c.NoReaper = true })
}

// printInfo answers containerd 2.x's `-info` (the shim library of 1.7
// predates it): the runtime's name and its OCI features document, from
// which CRI learns, e.g., that recursive read-only mounts work.
func printInfo(w io.Writer) error {
	f, err := json.Marshal(oci.Features())
	if err != nil {
		return err
	}
	// The type URL containerd registers for the features document (JSON).
	feat := &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/" +
		strconv.Itoa(specs.VersionMajor) + "/features/Features", Value: f}
	b, err := proto.Marshal(&apitypes.RuntimeInfo{Name: RuntimeName,
		Version: &apitypes.RuntimeVersion{Version: Version}, Features: feat})
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// Version is the shim's build version (set by cmd/containerd-shim-lodge-v2).
var Version = "dev"

// stateRoot is where pod state lives ($LODGE_SHIM_STATE overrides, for
// tests that run a private containerd).
func stateRoot() string {
	if d := os.Getenv("LODGE_SHIM_STATE"); d != "" {
		return d
	}
	return DefaultStateRoot
}

// taskService is internal/shim's task service plus what a containerd shim
// adds: the pod's record and network, and exiting with the last container.
type taskService struct {
	*shim.Service
	log      *slog.Logger
	sd       shutdown.Service
	dir      string    // the pod's state directory
	henv     *host.Env // resolved with the first sandbox (newSandbox runs one at a time, behind shim.Service's boot gate)
	closeOne sync.Once

	mu  sync.Mutex // guards rec and net
	rec *podRecord
	net *podNetwork
}

func initTaskService(ic *plugin.InitContext) (any, error) {
	pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
	if err != nil {
		return nil, err
	}
	sp, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
	if err != nil {
		return nil, err
	}
	publisher := pp.(cshim.Publisher)
	sd := sp.(shutdown.Service)
	// The library waits for the publisher to close before the process
	// exits; close it (after the last event) when the shim shuts down.
	sd.RegisterCallback(func(context.Context) error { return publisher.Close() })
	ctx := ic.Context
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	level := slog.LevelInfo
	if ic.Context.Value(cshim.OptsKey{}).(cshim.Opts).Debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(log.G(ctx).Logger.Out, &slog.HandlerOptions{Level: level}))

	// The shim was started in its first container's bundle.
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	b, err := oci.LoadBundle(cwd)
	if err != nil {
		return nil, err
	}
	r := roleOf(filepath.Base(cwd), b.Spec)
	dir := podDir(stateRoot(), ns, r.group)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	t := &taskService{log: logger, sd: sd, dir: dir,
		rec: &podRecord{Namespace: ns, Sandbox: r.group, Shim: procid.Of(os.Getpid())}}
	if err := t.rec.save(dir); err != nil {
		return nil, err
	}
	t.Service = shim.New(shim.Config{
		Log:        logger,
		NewSandbox: t.newSandbox,
		Placement: func(id string, spec *specs.Spec) *sandbox.Placement {
			r := roleOf(id, spec)
			switch {
			case r.sandbox:
				return &sandbox.Placement{}
			case r.joinsPod:
				return &sandbox.Placement{SandboxContainer: r.group}
			}
			return nil
		},
		Stdio:   fifoStdio{},
		HostPID: func(string, string) uint32 { return uint32(os.Getpid()) },
		Publish: func(topic string, ev proto.Message) {
			if err := publisher.Publish(namespaces.WithNamespace(context.Background(), ns), topic, ev); err != nil {
				logger.Warn("publish event", "topic", topic, "err", err)
			}
		},
	})
	return t, nil
}

// newSandbox boots the pod's VM for its first container: sized from the
// spec, wired to the pod's network namespace (if any), recorded for `shim
// delete`, with the guest's network configured and port forwarding on.
func (t *taskService) newSandbox(ctx context.Context, id string, spec *specs.Spec) (*sandbox.Sandbox, error) {
	if t.henv == nil {
		cfg, err := config.Load()
		if err != nil {
			return nil, err
		}
		if t.henv, err = host.Resolve(cfg, t.log); err != nil {
			return nil, err
		}
	}
	sc := t.henv.SandboxConfig(id, filepath.Join(t.dir, "vm"))
	var err error
	if sc.VM, err = sizeVM(sc.VM, spec); err != nil {
		return nil, fmt.Errorf("%w: %w", shim.ErrInvalid, err)
	}
	if sc.Templates != nil {
		sc.Templates.OptOut, _ = config.TemplateOptOut(spec.Annotations) // checked by sizeVM
	}
	r := roleOf(id, spec)
	if r.sandbox {
		t.joinPodCgroup(spec)
	}
	var cu rollback.Stack
	defer cu.Run()
	pn, err := t.attachNetwork(spec)
	if err != nil {
		return nil, err
	}
	cu.Add(func() { t.detachNetwork() })
	if pn != nil {
		sc.VM.NICs = sandbox.NICs(pn.Attachment)
	}
	sb, err := sandbox.Create(ctx, t.henv.Deps, sc)
	if pn != nil {
		pn.CloseFiles() // QEMU holds the taps now
	}
	if err != nil {
		return nil, err
	}
	cu.Add(func() {
		sb.Destroy(context.WithoutCancel(ctx))
		t.updateRecord(func(r *podRecord) { r.VMProcs = nil })
	})
	if err := t.updateRecord(func(r *podRecord) {
		for _, pid := range sb.HostPIDs() {
			r.VMProcs = append(r.VMProcs, procid.Of(pid))
		}
	}); err != nil {
		return nil, err
	}
	if r.inPod || pn != nil {
		req := &agentv1.NetworkRequest{}
		if pn != nil {
			req = sandbox.GuestNetwork(pn.Attachment)
		}
		req.Sysctls = sandbox.PodSysctls(spec)
		if err := sb.ConfigureNetwork(ctx, req); err != nil {
			return nil, err
		}
	}
	if pn != nil {
		if err := t.forwardPorts(pn, sb); err != nil {
			return nil, err
		}
	}
	cu.Release()
	return sb, nil
}

// joinPodCgroup moves the shim into the pod's host cgroup (the parent of
// the sandbox container's cgroupsPath: the kubelet's pod cgroup, which it
// limits for the whole pod) when that cgroup exists, so that QEMU, started
// next, is fenced with the pod. A cgroup nobody made is
// not created: there is no pod-level limit to honour then, and nothing to
// clean up.
func (t *taskService) joinPodCgroup(spec *specs.Spec) {
	if spec.Linux == nil || !hostcg.Usable(spec.Linux.CgroupsPath) {
		return
	}
	pod := filepath.Dir(spec.Linux.CgroupsPath)
	if pod == "/" || pod == "." || !hostcg.Exists(pod) {
		return
	}
	if err := hostcg.Enter(pod); err != nil {
		t.log.Warn("pod cgroup: the VM runs outside the pod's host cgroup", "cgroup", pod, "err", err)
		return
	}
	t.log.Info("VM in the pod's host cgroup", "cgroup", pod)
}

// RegisterTTRPC serves the task API.
func (t *taskService) RegisterTTRPC(s *ttrpc.Server) error {
	taskapi.RegisterTaskService(s, t)
	return nil
}

// Shutdown ends the shim once its last container is gone: the VM, its
// network plumbing and the pod's state go with it.
func (t *taskService) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	if t.Tasks() > 0 && !r.Now {
		return &emptypb.Empty{}, nil
	}
	err := t.close(ctx)
	t.sd.Shutdown()
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (t *taskService) close(ctx context.Context) error {
	var err error
	t.closeOne.Do(func() {
		if e := errors.Join(t.Service.Close(ctx), t.detachNetwork()); e != nil {
			// The shim exits next and nobody would clean up after it: do
			// what `shim delete` does from the record.
			t.log.Warn("shim shutdown: cleaning up from the pod record", "err", e)
			t.mu.Lock()
			rec := *t.rec
			t.mu.Unlock()
			err = cleanupPod(context.WithoutCancel(ctx), t.dir, &rec)
			return
		}
		err = os.RemoveAll(t.dir)
	})
	return err
}
