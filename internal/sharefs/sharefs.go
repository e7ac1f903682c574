// Package sharefs gives a sandbox its shared directory: a mount namespace
// of the sandbox's own in which host files are attached (read-only where
// the spec says so, before they are visible), and the virtiofsd that
// serves a read-only view of it to the guest. See share_linux.go for the
// layout and docs/security.md for what the guest can and cannot do with it.
package sharefs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/lodgeruntime/lodge/internal/confine"
)

// ErrNoVirtiofsd reports a missing virtiofsd binary.
var ErrNoVirtiofsd = errors.New("virtiofsd not found")

// ErrStopped reports a share used after Stop.
var ErrStopped = errors.New("share stopped")

// Virtiofsd starts shares.
type Virtiofsd struct {
	Binary string
	Log    *slog.Logger
	// ExecDir, if set, holds an execute-only copy of Binary that virtiofsd
	// is started from, which makes it non-dumpable (see
	// confine.ClearThreadCaps): its first process, which keeps no
	// capability, cannot be traced or written through /proc by another
	// process of uid 0 without capabilities (a sandbox's QEMU).
	ExecDir string
}

// DefaultExecDir is where the host keeps virtiofsd's execute-only copy.
const DefaultExecDir = "/run/lodge/virtiofsd-exec"

// Config is where one share keeps its files.
type Config struct {
	Dir     string // state directory of the share (created here; must not exist)
	Socket  string // vhost-user socket path (created here)
	LogFile string // virtiofsd's stderr
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

// virtiofsdArgs serves dir: no extended attributes (so no file
// capabilities or ACLs can be set), no CAP_MKNOD or CAP_SETFCAP (no device
// nodes), virtiofsd's own namespace sandbox and seccomp filter.
func virtiofsdArgs(dir string) []string {
	return []string{
		"--fd=3",
		"-o", "source=" + dir,
		"-o", "cache=auto",
		"-o", "sandbox=namespace",
		"-o", "announce_submounts",
		"-o", "no_xattr",
		"-o", "no_posix_lock", // the guest's locks stay in the guest
		"-o", "no_flock",
		"-o", "modcaps=-mknod:-setfcap",
		"-o", "log_level=warn",
	}
}

// start launches virtiofsd on listener lf (its fd 3), so QEMU may connect
// as soon as start returns. It must run on the share's namespace thread:
// virtiofsd's Pdeathsig fires when the thread that started it ends.
func (v *Virtiofsd) start(dir string, lf *os.File, c Config) (*Daemon, error) {
	logf, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("virtiofsd: %w", err)
	}
	defer logf.Close()
	bin := v.Binary
	if v.ExecDir != "" {
		if bin, err = confine.ExecOnlyCopy(v.Binary, v.ExecDir); err != nil {
			return nil, fmt.Errorf("virtiofsd: an execute-only copy of %s in %s: %w", v.Binary, v.ExecDir, err)
		}
	}
	cmd := exec.Command(bin, virtiofsdArgs(dir)...)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("virtiofsd: start %s: %w", v.Binary, err)
	}
	d := &Daemon{cmd: cmd, socket: c.Socket, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	return d, nil
}

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// stop ends the daemon (it does not exit when the VM does) and removes its
// socket.
func (d *Daemon) stop() {
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
