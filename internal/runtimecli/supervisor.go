package runtimecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/shim"
	"github.com/lodgeruntime/lodge/internal/unixsock"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// The supervisor is a detached process per container that owns its VM.
// `create` starts it and waits for its verdict on a pipe:
//
//	create (CLI)                         supervisor (__supervise, setsid)
//	mkdir <root>/<id>  (reserves the id)
//	fork/exec, stdio = the caller's ───> sandbox: QEMU, agent
//	                                     container created (guest init waits)
//	                                     state.json {created, pid = own pid}
//	                                     serve task.sock (containerd task API)
//	                                     serve fd.sock (stdio passed by exec)
//	<── sync pipe: {"ok":true} or {"error": "..."}
//	write --pid-file, exit
//	                                     ... start/kill/exec/pause via task.sock
//	                                     container exits: state.json {stopped},
//	                                     VM torn down, exit with the
//	                                     container's status (or its signal)
//
// The supervisor's PID is what `state` reports: it is a host process that
// lives exactly as long as the container and exits with its status, which
// is what conmon and containerd's runc shim wait for. The container's own
// processes live in the guest, where host PIDs mean nothing.

// syncMsg is the supervisor's verdict.
type syncMsg struct {
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`
}

const syncFD = 3

// createGrace is how long creating the container may take after the boot.
const createGrace = 2 * time.Minute

// syncReporter returns the function a child uses, once, to tell its
// parent (reading the other end of fd 3) that it succeeded or why not.
func syncReporter() func(error) {
	pipe := os.NewFile(syncFD, "sync")
	return func(err error) {
		m := syncMsg{OK: err == nil}
		if err != nil {
			m.Error = err.Error()
		}
		json.NewEncoder(pipe).Encode(m)
		pipe.Close()
	}
}

// cmdSupervise runs the supervisor (hidden command `__supervise`).
func cmdSupervise(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("__supervise")
	bundleDir := fs.String("bundle", "", "")
	consoleSocket := fs.String("console-socket", "", "")
	runtimeNetNS := fs.Bool("runtime-netns", false, "") // fd 4; this process has a network namespace of its own
	if err := parse(fs, args); err != nil {
		return err
	}
	id := fs.Arg(0)
	report := syncReporter()
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs) // also keeps SIGPIPE from killing us when a reader leaves

	sup, err := newSupervisor(ctx, g, log, env, superviseReq{id: id, bundleDir: *bundleDir, consoleSocket: *consoleSocket, runtimeNetNS: *runtimeNetNS})
	if err != nil {
		log.Error("create failed", "container_id", id, "err", err)
		report(err)
		return exitCode(1) // the caller prints the error
	}
	report(nil)
	return sup.run(sigs)
}

type supervisor struct {
	id, dir string
	root    string
	log     *slog.Logger
	svc     *shim.Service
	recMu   sync.Mutex // guards rec once the task API serves
	rec     *record
	exited  chan sandbox.ExitStatus
	ls      []net.Listener
	srv     *ttrpc.Server
	calls   sync.WaitGroup // task API calls in flight
	conns   openConns      // task API connections open
	// net is the engine's network namespace wired to the VM (nil: none).
	net *netsetup.Attachment
}

// superviseReq is what `create` hands its supervisor.
type superviseReq struct {
	id, bundleDir, consoleSocket string
	// runtimeNetNS: fd 4 is the runtime's network namespace, and this
	// process has one of its own (the spec asks for a new one).
	runtimeNetNS bool
}

// lateTap is the tap that carries the interface an engine's hook puts in
// the supervisor's own network namespace (see sandbox.Config.LateNetwork).
const lateTap = netsetup.TapPrefix + "0"

func newSupervisor(ctx context.Context, g globals, log *slog.Logger, env Env, r superviseReq) (*supervisor, error) {
	id, bundleDir, consoleSocket := r.id, r.bundleDir, r.consoleSocket
	dir := containerDir(g.root, id)
	b, err := oci.LoadBundle(bundleDir)
	if err != nil {
		return nil, err
	}
	henv, err := env.Resolve(log)
	if err != nil {
		return nil, err
	}
	// The VM's processes inherit the host cgroup (and its CPU limits).
	var cgPath string
	if l := b.Spec.Linux; l != nil && hostcg.Usable(l.CgroupsPath) {
		if err := hostcg.Enter(l.CgroupsPath); err != nil {
			log.Warn("host cgroup: the VM runs unfenced on the host (limits still apply in the guest)", "err", err)
		} else {
			cgPath = l.CgroupsPath
		}
	}
	optOut, err := config.TemplateOptOut(b.Spec.Annotations)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	s := &supervisor{id: id, dir: dir, root: g.root, log: log, exited: make(chan sandbox.ExitStatus, 1)}
	// A network namespace of our own: hooks run in the runtime's; when the
	// engine has create hooks (Docker's libnetwork-setkey moves the
	// container's veth into the namespace of the pid it is given, ours),
	// the VM gets a NIC whose tap waits here for that interface.
	var hookNS *os.File
	ownNS := fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	lateNet := false
	if r.runtimeNetNS {
		hookNS = os.NewFile(4, "runtime-netns")
		h := b.Spec.Hooks
		lateNet = h != nil && (len(h.Prestart) > 0 || len(h.CreateRuntime) > 0) //nolint:staticcheck // Docker's is a prestart hook
	}
	var sb *sandbox.Sandbox
	var vmProcs []procid.ID
	var started sandbox.StartInfo
	fds := &fdStore{pending: map[string][]*os.File{}}
	opener := &cliStdio{fds: fds, log: log}
	s.svc = shim.New(shim.Config{
		Log: log,
		NewSandbox: func(ctx context.Context, id string, _ *specs.Spec) (*sandbox.Sandbox, error) {
			sc := henv.SandboxConfig(id, filepath.Join(dir, vmDir))
			if b.Spec.Linux != nil {
				sc.VM = sandbox.SizeVM(sc.VM, b.Spec.Linux.Resources)
			}
			if sc.Templates != nil {
				sc.Templates.OptOut = optOut
			}
			// A network namespace the engine made (Podman, lodge): its
			// interfaces become the VM's.
			var nw *netsetup.Attachment
			if path := sandbox.NetNSPath(b.Spec); path != "" {
				if err := sandbox.CheckNetNS(path); err != nil {
					return nil, err
				}
				if nw, err = netsetup.Attach(path); err != nil {
					return nil, fmt.Errorf("network namespace %s: %w", path, err)
				}
				sc.VM.NICs = sandbox.NICs(nw)
			} else if lateNet {
				tap, err := netsetup.NewTap(ownNS, lateTap)
				if err != nil {
					return nil, err
				}
				defer tap.Close() // QEMU holds it once started
				sc.VM.NICs = []vmm.NIC{{Tap: tap, MAC: sandbox.TemplateSlotMAC}}
				sc.LateNetwork = true
			}
			sb, err = sandbox.Create(ctx, henv.Deps, sc)
			if nw != nil {
				nw.CloseFiles() // QEMU holds the taps now
			}
			if err == nil && nw != nil {
				if err = sb.ConfigureNetwork(ctx, sandbox.GuestNetwork(nw)); err != nil {
					sb.Destroy(context.WithoutCancel(ctx))
					err = fmt.Errorf("configure the guest's network: %w", err)
				}
			}
			if err != nil {
				if nw != nil {
					nw.Detach()
				}
				return nil, err
			}
			s.net = nw
			for _, pid := range sb.HostPIDs() {
				vmProcs = append(vmProcs, procid.Of(pid))
			}
			started = sb.Start()
			return sb, nil
		},
		Layered: func(bundle string) (*sandbox.LayeredRoot, error) {
			if henv.Layers == nil {
				return nil, nil
			}
			bl, err := henv.Layers.Store.ReadBundle(bundle)
			if err != nil || bl == nil {
				return nil, err
			}
			return &sandbox.LayeredRoot{Images: bl.Images, Writable: filepath.Join(bundle, "lodge-rw.img"), KeepWritable: bl.KeepWritable,
				WritableBytes: bl.WritableBytes}, nil
		},
		HookNetNS: hookNS,
		HooksRan: func(ctx context.Context, _ string) error {
			if !lateNet || s.net != nil {
				return nil
			}
			a, err := netsetup.AttachTap(ownNS, lateTap)
			if err != nil {
				return fmt.Errorf("the network the engine's hooks made: %w", err)
			}
			// No interface: docker --network none; the spec's net.*
			// sysctls are the VM namespace's either way.
			req := sandbox.GuestNetwork(a)
			req.Sysctls = sandbox.PodSysctls(b.Spec)
			if len(req.Interfaces) == 0 && len(req.Sysctls) == 0 {
				return nil
			}
			if err := sb.ConfigureNetwork(ctx, req); err != nil {
				a.Detach()
				return fmt.Errorf("configure the guest's network: %w", err)
			}
			s.net = a
			return nil
		},
		Stdio:   opener,
		HostPID: func(string, string) uint32 { return uint32(os.Getpid()) },
		Exited:  func(_ string, es sandbox.ExitStatus) { s.exited <- es },
		// The record follows the task service's one state.
		StatusChanged: func(_ string, st apitypes.Status) {
			switch st {
			case apitypes.Status_RUNNING:
				s.setStatus(statusRunning, nil)
			case apitypes.Status_PAUSED:
				s.setStatus(statusPaused, nil)
			}
		},
	})
	opener.resize = func(ctx context.Context, id, exec string, w, h uint32) error {
		_, err := s.svc.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: id, ExecID: exec, Width: w, Height: h})
		return shim.FromWire(err)
	}
	var cu rollback.Stack
	defer cu.Run()
	cu.Add(s.close)

	req := &taskapi.CreateTaskRequest{ID: id, Bundle: b.Dir, Stdin: "fd://0", Stdout: "fd://1", Stderr: "fd://2"}
	if b.Spec.Process.Terminal {
		req.Terminal = true
		if consoleSocket != "" {
			req.Stdin, req.Stdout, req.Stderr = schemeConsole+consoleSocket, schemeConsole+consoleSocket, ""
		}
	}
	// Bound the whole creation: a guest that never answers must not leave
	// create waiting (the boot itself has its own, shorter timeout).
	cctx, cancel := context.WithTimeout(ctx, henv.Config.VMM.BootTimeout.Duration+createGrace)
	_, err = s.svc.Create(cctx, req)
	cancel()
	if err != nil {
		return nil, shim.FromWire(err)
	}
	if cgPath != "" {
		var vmMemory int64
		if sb != nil {
			vmMemory = sb.HostMemoryBytes()
		}
		if err := hostcg.Update(cgPath, b.Spec.Linux.Resources, vmMemory); err != nil {
			log.Warn("host cgroup: CPU and memory limits not set on the VM (the container's still apply in the guest)", "err", err)
		}
	}
	start, err := procid.StartTime(os.Getpid())
	if err != nil {
		return nil, err
	}
	s.rec = &record{ID: id, Bundle: b.Dir, Rootfs: b.Rootfs, Pid: os.Getpid(), PidStart: start,
		Status: statusCreated, Created: time.Now().UTC(), Annotations: b.Spec.Annotations, Start: &started, CgroupPath: cgPath,
		VMProcs: vmProcs}
	if err := s.rec.save(g.root); err != nil {
		return nil, err
	}
	// Count calls in flight so that teardown waits for them (a kill that
	// ended the container must still get its answer). ttrpc's own Shutdown
	// can close a connection whose request has just arrived.
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(
		func(ctx context.Context, u ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
			s.calls.Add(1)
			defer s.calls.Done()
			return m(ctx, u)
		}))
	if err != nil {
		return nil, err
	}
	s.srv = srv
	taskapi.RegisterTaskService(srv, &persisting{Service: s.svc, sup: s})
	registerChanges(srv, s.svc, fds)
	registerPorts(srv, s.svc, fds)
	registerFiles(srv, s.svc, fds)
	registerMemory(srv, s.svc)
	ul, err := unixsock.Listen(filepath.Join(dir, taskSock))
	if err != nil {
		return nil, err
	}
	tl := &trackedListener{Listener: ul, conns: &s.conns}
	s.ls = append(s.ls, tl)
	go srv.Serve(context.Background(), tl)
	fl, err := unixsock.Listen(filepath.Join(dir, fdSock))
	if err != nil {
		return nil, err
	}
	s.ls = append(s.ls, fl)
	go fds.serve(fl)
	cu.Release()
	return s, nil
}

// run forwards signals to the container until it exits, then tears the VM
// down and ends this process the way the container ended.
func (s *supervisor) run(sigs <-chan os.Signal) error {
	for {
		select {
		case sig := <-sigs:
			s.forward(sig)
		case es := <-s.exited:
			if es.Reason != "" {
				// Whoever waits on us (run, an engine's shim reading
				// stderr) learns why, not only the 255.
				fmt.Fprintf(os.Stderr, "lodge-runtime: %s\n", es.Reason)
			}
			s.setStatus(statusStopped, &es.Code)
			s.close()
			s.exit(es)
			return nil
		}
	}
}

func (s *supervisor) forward(sig os.Signal) {
	n, ok := forwardable(sig)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.svc.Kill(ctx, &taskapi.KillRequest{ID: s.id, Signal: uint32(n)}); err != nil {
		s.log.Debug("forward signal", "signal", n, "err", err)
	}
}

func (s *supervisor) setStatus(st string, code *int) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if s.rec.Status == statusStopped {
		return // the end stands
	}
	s.rec.Status, s.rec.ExitStatus = st, code
	if err := s.rec.save(s.root); err != nil {
		s.log.Warn("save container state", "container_id", s.id, "err", err)
	}
}

func (s *supervisor) close() {
	for _, l := range s.ls {
		l.Close()
	}
	if s.srv != nil {
		done := make(chan struct{})
		go func() { s.calls.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	os.Remove(filepath.Join(s.dir, taskSock))
	os.Remove(filepath.Join(s.dir, fdSock))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.svc.Close(ctx); err != nil {
		s.log.Warn("tear down sandbox", "container_id", s.id, "err", err)
	}
	if s.net != nil {
		if err := s.net.Detach(); err != nil {
			s.log.Warn("unwire the network namespace", "container_id", s.id, "err", err)
		}
	}
	// Answers are written after a handler returns, and ttrpc's Shutdown
	// can drop one not yet written; so the server is never shut down, and
	// the process ends once its clients, having read their answers, have
	// hung up (a client that keeps its connection is not waited for long).
	select {
	case <-s.conns.idle():
	case <-time.After(2 * time.Second):
	}
}

// openConns counts open connections.
type openConns struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed while n is 0
}

func (o *openConns) add(d int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.zero == nil {
		o.zero = make(chan struct{})
		close(o.zero)
	}
	if o.n == 0 && d > 0 {
		o.zero = make(chan struct{})
	}
	o.n += d
	if d < 0 && o.n == 0 {
		close(o.zero)
	}
}

// idle is closed once no connection is open.
func (o *openConns) idle() <-chan struct{} {
	o.add(0)
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.zero
}

// trackedListener counts the connections it accepted that are still open.
type trackedListener struct {
	net.Listener
	conns *openConns
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.conns.add(1)
	return &trackedConn{Conn: c, done: func() { l.conns.add(-1) }}, nil
}

type trackedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}

// exit ends the supervisor with the container's status: by the same signal
// where the default action terminates, else with the exit code.
func (s *supervisor) exit(es sandbox.ExitStatus) {
	if es.Signal > 0 {
		sig := syscall.Signal(es.Signal)
		switch sig {
		case syscall.SIGCHLD, syscall.SIGURG, syscall.SIGWINCH, syscall.SIGCONT,
			syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		default:
			unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
			dieBy(sig)
			time.Sleep(time.Second)
		}
	}
	os.Exit(es.Code)
}

// dieBy ends the process by sig's default action. The Go runtime keeps
// its own handler for the signals it takes for a crash of its own
// (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGQUIT, SIGSYS)
// even after signal.Reset: it would print a goroutine dump and exit with
// status 2. So for every signal the kernel's disposition is set to
// SIG_DFL directly (an all-zero struct sigaction; this also undoes
// signal.Notify) and the signal sent to this thread, unblocked.
func dieBy(sig syscall.Signal) {
	var sa [4]uintptr // the kernel's struct sigaction: handler SIG_DFL, flags, restorer, mask
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa[0])), 0, 8, 0, 0)
	var set unix.Sigset_t
	set.Val[0] = 1 << (uint(sig) - 1)
	unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	unix.Tgkill(os.Getpid(), unix.Gettid(), sig)
}

// persisting is the task service plus what changes on the host with an
// Update (the VM's host cgroup); the record follows the service's state
// through Config.StatusChanged.
type persisting struct {
	*shim.Service
	sup *supervisor
}

func (p *persisting) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	resp, err := p.Service.Update(ctx, r)
	if err == nil && p.sup.rec.CgroupPath != "" {
		var res specs.LinuxResources
		if json.Unmarshal(r.Resources.Value, &res) == nil {
			if err := hostcg.Update(p.sup.rec.CgroupPath, &res, 0); err != nil { // the VM's RAM is what it was
				p.sup.log.Warn("update host cgroup", "err", err)
			}
		}
	}
	return resp, err
}

// dialTask connects to a container's supervisor.
func dialTask(ctx context.Context, root, id string) (taskapi.TaskService, func(), error) {
	c, err := dialSupervisor(ctx, root, id)
	if err != nil {
		return nil, nil, err
	}
	return taskapi.NewTaskClient(c), func() { c.Close() }, nil
}

// dialSupervisor connects a ttrpc client to a container's supervisor.
func dialSupervisor(ctx context.Context, root, id string) (*ttrpc.Client, error) {
	conn, err := unixsock.Dial(ctx, filepath.Join(containerDir(root, id), taskSock))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("container %s is not running", id)
		}
		return nil, fmt.Errorf("connect to the supervisor of %s: %w", id, err)
	}
	return ttrpc.NewClient(conn), nil
}

// forwardable reports whether a signal received by lodge-runtime goes on
// to the container, as runc forwards them: all but SIGCHLD, SIGPIPE,
// SIGURG and SIGWINCH, which concern this process itself.
func forwardable(sig os.Signal) (syscall.Signal, bool) {
	n, ok := sig.(syscall.Signal)
	switch {
	case !ok, n == syscall.SIGCHLD, n == syscall.SIGPIPE, n == syscall.SIGURG, n == syscall.SIGWINCH:
		return 0, false
	}
	return n, true
}
