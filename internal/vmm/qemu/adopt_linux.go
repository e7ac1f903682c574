package qemu

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/unixsock"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// Adopt takes over a QEMU another process started and parents (a pooled
// clone's keeper): it is watched and killed through a process descriptor
// (no PID reuse can make it another process) and driven through the
// monitor socket in a.StateDir, which its owner has let go of
// (vmm.Pauser.ReleaseMonitor). Its sockets and files stay its owner's.
func (d *Driver) Adopt(ctx context.Context, a vmm.Adopted) (vmm.VM, error) {
	pidfd, err := unix.PidfdOpen(a.PID, 0)
	if err != nil {
		return nil, fmt.Errorf("qemu: adopt pid %d: %w", a.PID, err)
	}
	v := &vm{cfg: vmm.Config{ID: a.ID, StateDir: a.StateDir, Accel: a.Accel, Channel: vmm.ChannelSerial},
		log: d.Log.With("vmm", "qemu", "sandbox_id", a.ID), done: make(chan struct{}), pidfd: pidfd,
		agentPath: filepath.Join(a.StateDir, AgentSocket),
		info:      vmm.Info{PID: a.PID, Accel: a.Accel, Console: filepath.Join(a.StateDir, ConsoleLog), Started: a.Started}}
	go func() {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(v.done) // its owner reaps it; the exit status is the owner's
	}()
	qctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	conn, err := unixsock.Dial(qctx, filepath.Join(a.StateDir, QMPSocket))
	if err == nil {
		if v.qmp, err = ConnectQMP(qctx, conn); err != nil {
			conn.Close()
		}
	}
	if err != nil {
		v.kill()
		return nil, fmt.Errorf("qemu: adopt pid %d: connect monitor: %w", a.PID, err)
	}
	return v, nil
}

// Pause stops the guest's vCPUs.
func (v *vm) Pause(ctx context.Context) error { return v.monitor(ctx, "stop") }

// Resume starts the guest's vCPUs again.
func (v *vm) Resume(ctx context.Context) error { return v.monitor(ctx, "cont") }

func (v *vm) monitor(ctx context.Context, cmd string) error {
	if v.qmp == nil {
		return errors.New("qemu: the monitor was let go of")
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := v.qmp.Execute(qctx, cmd, nil, nil); err != nil {
		return fmt.Errorf("qemu: %s: %w", cmd, err)
	}
	return nil
}

// ReleaseMonitor closes this process's monitor connection, so that the
// process adopting the VM can connect.
func (v *vm) ReleaseMonitor() {
	if v.qmp != nil {
		v.qmp.Close()
		v.qmp = nil
	}
}
