// Package vmmtest is a stand-in VMM for tests of what sits above vmm (the
// sandbox, the task service): no QEMU runs; each VM's agent channel is
// served by an agenttest fake. It counts the VMs started and running, so
// that tests can assert how many boots happened and that none is left.
package vmmtest

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/lodgeruntime/lodge/internal/agent/agenttest"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// Driver starts fake VMs.
type Driver struct {
	// Agent makes the fake agent of each VM (nil: a default Fake).
	Agent func() *agenttest.Fake
	// BootDelay is how long Start takes (a boot's stand-in).
	BootDelay time.Duration
	// StartErr, if set, fails every Start.
	StartErr error

	mu      sync.Mutex
	started int
	running int
}

// Started counts the VMs started so far.
func (d *Driver) Started() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

// Running counts the VMs started and not shut down.
func (d *Driver) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

// Start "boots" a VM.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.StartErr != nil {
		return nil, d.StartErr
	}
	select {
	case <-time.After(d.BootDelay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f := &agenttest.Fake{}
	if d.Agent != nil {
		f = d.Agent()
	}
	d.mu.Lock()
	d.started++
	d.running++
	d.mu.Unlock()
	return &VM{d: d, agent: f, done: make(chan struct{}),
		info: vmm.Info{PID: 0, Accel: cfg.Accel, Started: time.Now()}}, nil
}

// VM is a fake VM.
type VM struct {
	d     *Driver
	agent *agenttest.Fake
	info  vmm.Info

	once sync.Once
	mu   sync.Mutex // guards conn
	conn net.Conn
	done chan struct{}
}

// Agent is the VM's fake agent.
func (v *VM) Agent() *agenttest.Fake { return v.agent }

// Dial connects to the fake agent.
func (v *VM) Dial(ctx context.Context) (net.Conn, error) {
	select {
	case <-v.done:
		return nil, vmm.ErrExited
	default:
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn != nil {
		return nil, errors.New("vmmtest: the agent channel is already connected")
	}
	v.conn = v.agent.Pipe()
	return v.conn, nil
}

// Shutdown ends the VM: its agent channel closes.
func (v *VM) Shutdown(context.Context) error {
	v.once.Do(func() {
		v.mu.Lock()
		if v.conn != nil {
			v.conn.Close()
		}
		v.mu.Unlock()
		close(v.done)
		v.d.mu.Lock()
		v.d.running--
		v.d.mu.Unlock()
	})
	return nil
}

// Wait waits for the VM's end.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.done:
		return vmm.ErrExited
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the VM has ended.
func (v *VM) Done() <-chan struct{} { return v.done }

// Info describes the VM.
func (v *VM) Info() vmm.Info { return v.info }
