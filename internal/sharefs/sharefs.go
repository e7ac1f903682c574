// Package sharefs runs virtiofsd, the vhost-user daemon that serves a host
// directory to the guest over virtio-fs. One daemon serves one sandbox's
// shared directory; containers' root filesystems and volumes are bind
// mounts below it.
package sharefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ErrNoVirtiofsd reports a missing virtiofsd binary.
var ErrNoVirtiofsd = errors.New("virtiofsd not found")

// Virtiofsd starts daemons.
type Virtiofsd struct {
	Binary string
	Log    *slog.Logger
}

// Share is what one daemon serves.
type Share struct {
	Dir     string // host directory
	Socket  string // vhost-user socket path (created here)
	LogFile string // the daemon's stderr
}

// Daemon is a running virtiofsd.
type Daemon struct {
	cmd    *exec.Cmd
	socket string
	done   chan struct{}
}

// Check reports whether the binary exists and is executable.
func (v *Virtiofsd) Check() error {
	if _, err := exec.LookPath(v.Binary); err != nil {
		return fmt.Errorf("%w: %s (install Debian's qemu-system-common or set sharefs.virtiofsd)", ErrNoVirtiofsd, v.Binary)
	}
	return nil
}

// Start launches virtiofsd on a listening socket it inherits as fd 3, so
// QEMU may connect as soon as Start returns.
func (v *Virtiofsd) Start(ctx context.Context, s Share) (*Daemon, error) {
	if err := v.Check(); err != nil {
		return nil, err
	}
	os.Remove(s.Socket)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("virtiofsd: %w", err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		os.Remove(s.Socket)
		return nil, fmt.Errorf("virtiofsd: %w", err)
	}
	defer lf.Close()
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		os.Remove(s.Socket)
		return nil, fmt.Errorf("virtiofsd: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(v.Binary,
		"--fd=3",
		"-o", "source="+s.Dir,
		"-o", "cache=auto",
		"-o", "sandbox=namespace",
		"-o", "announce_submounts",
		"-o", "log_level=warn",
	)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(s.Socket)
		return nil, fmt.Errorf("virtiofsd: start %s: %w", v.Binary, err)
	}
	d := &Daemon{cmd: cmd, socket: s.Socket, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	return d, nil
}

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Stop ends the daemon (it does not exit when the VM does) and removes its
// socket.
func (d *Daemon) Stop() {
	select {
	case <-d.done:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(time.Second):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	os.Remove(d.socket)
}
