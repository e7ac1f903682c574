package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// stdioWait bounds how long Create waits for the stdio streams the host
// announced; it opens them before calling Create.
const stdioWait = 10 * time.Second

// outputDrain bounds how long Wait waits for output after the process died.
const outputDrain = 5 * time.Second

// containers implements agentv1.ContainersService.
type containers struct {
	log       *slog.Logger
	stateDir  string
	sharesDir string
	streams   *streams
	caps      []string

	mu     sync.Mutex // guards byID and mounted
	byID   map[string]*container
	shares sharesMounted
}

type sharesMounted map[string]bool

// container is one OCI container in the guest.
type container struct {
	c       *libcontainer.Container
	init    *libcontainer.Process
	output  sync.WaitGroup // stdout/stderr copies
	closers []io.Closer    // stdio streams, closed on delete
	exited  chan struct{}  // closed when init has been waited for
	status  *agentv1.WaitResponse
}

func newContainers(cfg Config, st *streams) *containers {
	return &containers{
		log:       cfg.Log,
		stateDir:  cfg.StateDir,
		sharesDir: cfg.SharesDir,
		streams:   st,
		caps:      cfg.Capabilities,
		byID:      map[string]*container{},
		shares:    sharesMounted{},
	}
}

func (cs *containers) get(id string) (*container, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.byID[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q: %v", id, errNotFound)
	}
	return c, nil
}

func (cs *containers) Create(ctx context.Context, req *agentv1.CreateRequest) (_ *agentv1.CreateResponse, retErr error) {
	id := req.ContainerId
	if !transport.ValidID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid container id %q", id)
	}
	var spec specs.Spec
	if err := json.Unmarshal(req.Spec, &spec); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: decode spec: %v", id, err)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: spec has no process args", id)
	}
	rootfs, err := cs.rootfs(req.Rootfs)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", id, err)
	}

	cs.mu.Lock()
	if _, dup := cs.byID[id]; dup {
		cs.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "container %q already exists", id)
	}
	cs.byID[id] = nil // reserve the id
	cs.mu.Unlock()
	defer func() {
		if retErr != nil {
			cs.mu.Lock()
			delete(cs.byID, id)
			cs.mu.Unlock()
			cs.streams.drop(id)
		}
	}()

	spec.Root = &specs.Root{Path: rootfs, Readonly: spec.Root != nil && spec.Root.Readonly}
	spec.Hooks = nil // hooks run on the host, where the runtime spec says they run
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	spec.Linux.CgroupsPath = "/lodge/" + id
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: &spec})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", id, err)
	}
	t0 := time.Now()
	lc, err := libcontainer.Create(cs.stateDir, id, cfg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "container %s: create: %v", id, err)
	}
	c := &container{c: lc, exited: make(chan struct{})}
	defer func() {
		if retErr != nil {
			c.closeStreams()
			lc.Destroy()
		}
	}()
	p, err := newProcess(spec.Process)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", id, err)
	}
	p.Init = true
	release, err := cs.attachStdio(ctx, c, p, id, "", req.Stdio)
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	err = lc.Start(p)
	release()
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: start init: %v", id, err)
	}
	c.init = p
	pid, _ := p.Pid()
	go c.wait()

	cs.mu.Lock()
	cs.byID[id] = c
	cs.mu.Unlock()
	cs.log.Info("container created", "container_id", id, "pid", pid,
		"libcontainer_create", t1.Sub(t0).Round(time.Millisecond), "init_start", time.Since(t1).Round(time.Millisecond))
	return &agentv1.CreateResponse{Pid: int32(pid)}, nil
}

// rootfs mounts the share that holds the root filesystem (once) and returns
// the guest path of the rootfs.
func (cs *containers) rootfs(r *agentv1.Rootfs) (string, error) {
	if r == nil || !transport.ValidID(r.ShareTag) {
		return "", fmt.Errorf("invalid rootfs share")
	}
	rel := filepath.Clean("/" + r.Path)
	if rel == "/" || strings.Contains(r.Path, "..") {
		return "", fmt.Errorf("invalid rootfs path %q", r.Path)
	}
	dir := filepath.Join(cs.sharesDir, r.ShareTag)
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.shares[r.ShareTag] {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		if err := unix.Mount(r.ShareTag, dir, "virtiofs", 0, ""); err != nil {
			return "", fmt.Errorf("mount virtio-fs share %q: %w", r.ShareTag, err)
		}
		cs.shares[r.ShareTag] = true
	}
	return filepath.Join(dir, rel), nil
}

// attachStdio wires the process's stdio to the host's streams (or to
// /dev/null). The returned release closes the agent's copies of the
// process's ends once the process holds them.
func (cs *containers) attachStdio(ctx context.Context, c *container, p *libcontainer.Process, id, exec string, want *agentv1.Stdio) (func(), error) {
	if want == nil {
		want = &agentv1.Stdio{}
	}
	ctx, cancel := context.WithTimeout(ctx, stdioWait)
	defer cancel()
	var childEnds []*os.File
	release := func() {
		for _, f := range childEnds {
			f.Close()
		}
	}
	fail := func(err error) (func(), error) {
		release()
		c.closeStreams()
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: stdio: %v", id, err)
	}
	devNull := func() (*os.File, error) {
		f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err == nil {
			childEnds = append(childEnds, f)
		}
		return f, err
	}
	take := func(kind transport.Kind) (net.Conn, error) {
		st, err := cs.streams.take(ctx, streamKey{id, exec, kind})
		if err == nil {
			c.closers = append(c.closers, st)
		}
		return st, err
	}

	if want.Stdin {
		st, err := take(transport.KindStdin)
		if err != nil {
			return fail(err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		childEnds = append(childEnds, r)
		p.Stdin = r
		go func() {
			io.Copy(w, st)
			w.Close()
		}()
	} else if f, err := devNull(); err != nil {
		return fail(err)
	} else {
		p.Stdin = f
	}
	for _, o := range []struct {
		on   bool
		kind transport.Kind
		set  func(*os.File)
	}{
		{want.Stdout, transport.KindStdout, func(f *os.File) { p.Stdout = f }},
		{want.Stderr, transport.KindStderr, func(f *os.File) { p.Stderr = f }},
	} {
		if !o.on {
			f, err := devNull()
			if err != nil {
				return fail(err)
			}
			o.set(f)
			continue
		}
		st, err := take(o.kind)
		if err != nil {
			return fail(err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		childEnds = append(childEnds, w)
		o.set(w)
		c.output.Add(1)
		go func() {
			defer c.output.Done()
			io.Copy(st, r)
			r.Close()
			st.Close() // half-close: the host sees EOF
		}()
	}
	return release, nil
}

func (c *container) closeStreams() {
	for _, cl := range c.closers {
		cl.Close()
	}
}

// wait reaps the init process and records its status as runc reports it.
func (c *container) wait() {
	st, _ := c.init.Wait()
	resp := &agentv1.WaitResponse{ExitStatus: 255}
	if st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				resp.Signal = uint32(ws.Signal())
				resp.ExitStatus = 128 + int32(ws.Signal())
			default:
				resp.ExitStatus = int32(ws.ExitStatus())
			}
		}
	}
	done := make(chan struct{})
	go func() { c.output.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputDrain):
	}
	c.status = resp
	close(c.exited)
}

func (cs *containers) Start(ctx context.Context, req *agentv1.StartRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Exec(); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: start: %v", req.ContainerId, err)
	}
	return &agentv1.Empty{}, nil
}

func (cs *containers) Signal(ctx context.Context, req *agentv1.SignalRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if req.Signal == 0 || req.Signal > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid signal %d", req.Signal)
	}
	if err := c.c.Signal(unix.Signal(req.Signal)); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: signal %d: %v", req.ContainerId, req.Signal, err)
	}
	return &agentv1.Empty{}, nil
}

func (cs *containers) Wait(ctx context.Context, req *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.exited:
		return c.status, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (cs *containers) Delete(ctx context.Context, req *agentv1.DeleteRequest) (*agentv1.Empty, error) {
	c, err := cs.get(req.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Destroy(); err != nil {
		return nil, status.Errorf(codes.Internal, "container %s: destroy: %v", req.ContainerId, err)
	}
	c.closeStreams()
	cs.mu.Lock()
	delete(cs.byID, req.ContainerId)
	cs.mu.Unlock()
	cs.streams.drop(req.ContainerId)
	return &agentv1.Empty{}, nil
}

// newProcess turns the spec's process into libcontainer's.
func newProcess(p *specs.Process) (*libcontainer.Process, error) {
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		NoNewPrivileges: &p.NoNewPrivileges,
		Scheduler:       p.Scheduler,
		IOPriority:      p.IOPriority,
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective,
			Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, rl := range p.Rlimits {
		t, ok := rlimits[rl.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: t, Hard: rl.Hard, Soft: rl.Soft})
	}
	return lp, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
