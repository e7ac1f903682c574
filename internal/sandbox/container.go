package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// outputGrace bounds the wait for the last output after a process exited.
const outputGrace = 5 * time.Second

// Stdio connects a container process to the caller. Nil fields are
// /dev/null in the guest.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// ContainerConfig describes a container to create in a sandbox.
type ContainerConfig struct {
	ID     string
	Spec   *specs.Spec
	Rootfs string // host directory of the root filesystem
	Stdio  Stdio
}

// ExitStatus is how a container's process ended.
type ExitStatus = agent.ExitStatus

// Container is a container inside a sandbox.
type Container struct {
	id     string
	sb     *Sandbox
	rootfs string // host mount point below the shared dir
	pid    int    // in the guest
	output sync.WaitGroup
}

// ErrUnsupported reports a spec that asks for something a VM cannot do.
var ErrUnsupported = errors.New("not supported inside a Lodge VM")

// CreateContainer makes a container in the sandbox, created but not
// started. On error nothing it made is left.
func (s *Sandbox) CreateContainer(ctx context.Context, cc ContainerConfig) (_ *Container, retErr error) {
	s.phases.mark()
	if !transport.ValidID(cc.ID) {
		return nil, fmt.Errorf("invalid container id %q", cc.ID)
	}
	gs, err := guestSpec(cc.Spec)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", cc.ID, err)
	}
	specJSON, err := json.Marshal(gs)
	if err != nil {
		return nil, err
	}
	var cu cleanup
	defer cu.run()

	s.mu.Lock()
	if _, dup := s.containers[cc.ID]; dup {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %s: %w", cc.ID, ErrExists)
	}
	c := &Container{id: cc.ID, sb: s, rootfs: filepath.Join(s.dir, sharedDir, cc.ID, "rootfs")}
	s.containers[cc.ID] = c
	s.mu.Unlock()
	cu.add(func() {
		s.mu.Lock()
		delete(s.containers, cc.ID)
		s.mu.Unlock()
	})

	readonly := cc.Spec.Root != nil && cc.Spec.Root.Readonly
	if err := bindMount(cc.Rootfs, c.rootfs, readonly); err != nil {
		return nil, fmt.Errorf("container %s: rootfs: %w", cc.ID, err)
	}
	cu.add(func() { c.unmount() })

	streams, err := c.attach(cc.Stdio)
	if err != nil {
		return nil, fmt.Errorf("container %s: stdio: %w", cc.ID, err)
	}
	cu.add(func() {
		for _, st := range streams {
			st.Close()
		}
	})
	c.pid, err = s.agent.Create(ctx, &agentv1.CreateRequest{
		ContainerId: cc.ID,
		Spec:        specJSON,
		Rootfs:      &agentv1.Rootfs{ShareTag: SharedTag, Path: cc.ID + "/rootfs"},
		Stdio:       &agentv1.Stdio{Stdin: cc.Stdio.Stdin != nil, Stdout: cc.Stdio.Stdout != nil, Stderr: cc.Stdio.Stderr != nil},
	})
	if err != nil {
		return nil, fmt.Errorf("container %s: create in guest: %w", cc.ID, err)
	}
	cu.release()
	s.log.Debug("container created", "container_id", cc.ID, "pid", c.pid)
	s.phases.done(PhaseCreate)
	return c, nil
}

// attach opens the stdio streams and starts copying; the agent matches
// them to the process by the stream headers.
func (c *Container) attach(io_ Stdio) ([]net.Conn, error) {
	var streams []net.Conn
	open := func(kind transport.Kind) (net.Conn, error) {
		st, err := c.sb.agent.OpenStdio(c.id, "", kind)
		if err != nil {
			for _, s := range streams {
				s.Close()
			}
			return nil, err
		}
		streams = append(streams, st)
		return st, nil
	}
	if io_.Stdin != nil {
		st, err := open(transport.KindStdin)
		if err != nil {
			return nil, err
		}
		go func() {
			io.Copy(st, io_.Stdin)
			st.Close() // half-close: the process sees EOF
		}()
	}
	for _, o := range []struct {
		w    io.Writer
		kind transport.Kind
	}{{io_.Stdout, transport.KindStdout}, {io_.Stderr, transport.KindStderr}} {
		if o.w == nil {
			continue
		}
		st, err := open(o.kind)
		if err != nil {
			return nil, err
		}
		c.output.Add(1)
		go func(w io.Writer) {
			defer c.output.Done()
			io.Copy(w, st)
			st.Close()
		}(o.w)
	}
	return streams, nil
}

// ID is the container's id.
func (c *Container) ID() string { return c.id }

// GuestPID is the init process's PID in the guest.
func (c *Container) GuestPID() int { return c.pid }

// Start runs the container's process.
func (c *Container) Start(ctx context.Context) error {
	c.sb.phases.mark()
	if err := c.sb.agent.Start(ctx, c.id); err != nil {
		return fmt.Errorf("container %s: start: %w", c.id, err)
	}
	c.sb.phases.done(PhaseStart)
	return nil
}

// Signal sends sig to the container's init process.
func (c *Container) Signal(ctx context.Context, sig int) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("container %s: invalid signal %d", c.id, sig)
	}
	if err := c.sb.agent.Signal(ctx, c.id, uint32(sig)); err != nil {
		return fmt.Errorf("container %s: signal %d: %w", c.id, sig, err)
	}
	return nil
}

// Wait waits for the init process to exit and for its output to arrive.
// If the VM dies first, Wait fails.
func (c *Container) Wait(ctx context.Context) (ExitStatus, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.sb.vm.Done():
			cancel()
		case <-wctx.Done():
		}
	}()
	es, err := c.sb.agent.Wait(wctx, c.id)
	if err != nil {
		select {
		case <-c.sb.vm.Done():
			return ExitStatus{}, fmt.Errorf("container %s: the VM exited before the container (qemu: %v)", c.id, c.sb.vm.Wait(ctx))
		default:
		}
		return ExitStatus{}, fmt.Errorf("container %s: wait: %w", c.id, err)
	}
	done := make(chan struct{})
	go func() { c.output.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputGrace):
		c.sb.log.Warn("output streams still open after exit", "container_id", c.id)
	}
	return es, nil
}

// Delete removes the container from the guest and unmounts its rootfs.
func (c *Container) Delete(ctx context.Context) error {
	err := c.sb.agent.Delete(ctx, c.id)
	c.sb.mu.Lock()
	delete(c.sb.containers, c.id)
	c.sb.mu.Unlock()
	return errors.Join(err, c.unmount())
}

func (c *Container) unmount() error {
	return unmount(c.rootfs)
}
