package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lodgeruntime/lodge/internal/confine"
	"github.com/lodgeruntime/lodge/internal/rollback"
	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/uidlease"
	"github.com/lodgeruntime/lodge/internal/unixsock"
	"github.com/lodgeruntime/lodge/internal/vmm"

	"golang.org/x/sys/unix"
)

// qemuLog holds QEMU's own stdout and stderr.
const qemuLog = "qemu.log"

// monitorTimeout bounds QEMU's start-up to a greeting on the monitor (it
// takes ~100 ms; far more means QEMU is stuck or gone).
const monitorTimeout = 30 * time.Second

// Driver starts VMs with qemu-system-x86_64.
type Driver struct {
	Binary string
	Host   Host
	Log    *slog.Logger
	// ExecDir, if set, holds an execute-only copy of Binary that QEMU is
	// started from, which makes each QEMU non-dumpable (see
	// confine.ClearThreadCaps): one sandbox's QEMU cannot read another's
	// memory through /proc although both are uid 0.
	ExecDir string
	// Users, if set, gives each QEMU a host user and group of its own for
	// as long as it runs. One that serves 9p (a clone) keeps the file
	// capabilities that takes, in a user namespace of its own (nsIDMap).
	Users *uidlease.Pool
	// ROFile, if set, is lodge-qemu-rofile.so (rofile/rofile.c), which a
	// clone's QEMU preloads so that it opens its template's memory file
	// read-only; the file is then bound read-only into its jail, and no
	// clone can write what the others map. Without it, a clone's QEMU
	// opens the file read-write (QEMU 7.2 does, to map it privately).
	ROFile string
}

// ROFileName is the preload library's file name (see Driver.ROFile).
const ROFileName = "lodge-qemu-rofile.so"

// DefaultExecDir is where the host keeps QEMU's execute-only copy.
const DefaultExecDir = "/run/lodge/qemu-exec"

var _ vmm.Driver = (*Driver)(nil)

// The capabilities QEMU keeps (its bounding set, hence what it has as
// root after exec): none, or what serving a 9p share with
// security_model=passthrough needs (acting on files of any owner and
// setting their owner and mode as the guest asks; confine's filter keeps
// setuid bits and device nodes off them). With a user of its own, it has
// them in its own user namespace only (nsIDMap). Never
// CAP_DAC_READ_SEARCH, which CAP_DAC_OVERRIDE covers for paths and which
// would let open_by_handle_at reach any file of a file system it holds a
// descriptor of, past its jail.
var (
	capsNone []uintptr
	caps9P   = []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID}
)

// NoFile is QEMU's open-file limit.
const NoFile = 16384

// NProc bounds the threads of a QEMU that runs as a user of its own (the
// kernel counts them per user; root is exempt): its vCPUs, main loop, RCU
// and worker pools use a few dozen.
const NProc = 1024

// jailFor is the file system QEMU (the program at bin) sees besides /usr
// and /proc: its kernel and initrd read-only; its console log, its memory
// file (a template's, or the template's a clone maps privately) and 9p
// directories given by path writable (placeholders read-only); the
// accelerator's device, a node of its own owned by uid; at bin, the
// execute-only copy of bin in execDir (if set), so that QEMU finds its
// modules and firmware relative to its own path. Everything else it uses
// comes as descriptors. The files it would create are made first, owned by
// uid (when not 0), as whom QEMU runs; unless it reads any file (readsAll:
// 9p's capabilities), what it reads must be readable by all. With rofile
// (see Driver.ROFile) a clone's memory file is read-only and the library is
// there. On error, no jail root is left.
func jailFor(cfg vmm.Config, bin, execDir string, uid int, readsAll bool, rofile string) (*confine.Jail, error) {
	j := &confine.Jail{Root: filepath.Join(cfg.StateDir, jailDir),
		ReadOnly: []string{cfg.Kernel, cfg.Initrd}, Writable: []string{filepath.Join(cfg.StateDir, ConsoleLog)}}
	if !strings.HasPrefix(bin, "/usr/") {
		j.ReadOnly = append(j.ReadOnly, bin) // a QEMU of the operator's elsewhere
	}
	if execDir != "" {
		p, err := confine.ExecOnlyCopy(bin, execDir)
		if err != nil {
			return nil, fmt.Errorf("an execute-only copy of %s in %s: %w", bin, execDir, err)
		}
		j.Replace = map[string]string{bin: p}
	}
	create := []string{filepath.Join(cfg.StateDir, ConsoleLog)}
	switch {
	case cfg.Memory.Shared: // a template's, being built
		j.Writable = append(j.Writable, cfg.Memory.File)
		create = append(create, cfg.Memory.File)
	case cfg.Memory.File != "" && rofile != "":
		j.ReadOnly = append(j.ReadOnly, cfg.Memory.File, rofile)
	case cfg.Memory.File != "":
		// QEMU 7.2 opens a memory file for writing even to map it
		// privately (its readonly=on makes guest RAM read-only): a clone's
		// template memory is 0400, which its QEMU passes with
		// CAP_DAC_OVERRIDE (kept for 9p).
		j.Writable = append(j.Writable, cfg.Memory.File)
	}
	for _, s := range cfg.Shares9P {
		switch {
		case s.Placeholder:
			j.ReadOnly = append(j.ReadOnly, s.Path)
		case s.Dir == nil:
			j.Writable = append(j.Writable, s.Path)
		}
	}
	if cfg.Accel == vmm.AccelKVM {
		// Its own /dev/kvm, owned by its user: no group of the host's.
		j.OwnDevices, j.Owner = []string{"/dev/kvm"}, uid
	}
	if uid != 0 && !readsAll {
		// What it reads must be readable by all: say so now, rather than
		// leave it to QEMU's "Permission denied".
		for _, p := range j.ReadOnly {
			if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o004 == 0 && (!st.IsDir() || st.Mode().Perm()&0o001 == 0) {
				return nil, fmt.Errorf("QEMU runs as uid %d, which cannot read %s (mode %#o): make it readable by all (`make setup` does), "+
					"or set vmm.qemu_uid_count = 0 to run QEMU as root", uid, p, st.Mode().Perm())
			}
		}
	}
	for _, p := range create {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, err
		}
		if uid != 0 {
			err = f.Chown(uid, uid)
		}
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if err := os.Mkdir(j.Root, 0o700); err != nil {
		return nil, err
	}
	return j, nil
}

// jailDir is where QEMU's jail is mounted (in its namespace only), below
// the VM's state directory, until QEMU has started.
const jailDir = "qemu-root"

// Start launches QEMU and connects to its monitor.
func (d *Driver) Start(ctx context.Context, cfg vmm.Config) (vmm.VM, error) {
	argv, err := Argv(cfg, d.Host)
	if err != nil {
		return nil, err
	}
	// Before anything of the VM's exists: refused, it leaves nothing.
	if !cfg.Memory.Merged() {
		if err := noMergeAny(); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	log := d.Log.With("vmm", "qemu", "sandbox_id", cfg.ID)
	var cu rollback.Stack
	defer cu.Run()

	// Listening sockets QEMU inherits (fd 3 QMP, fd 4 agent): they exist
	// before QEMU starts, so nobody polls for a socket file.
	qmpPath := filepath.Join(cfg.StateDir, QMPSocket)
	agentPath := filepath.Join(cfg.StateDir, AgentSocket)
	files := []*os.File{}
	for _, p := range []string{qmpPath, agentPath} {
		if p == agentPath && cfg.Channel != vmm.ChannelSerial {
			continue
		}
		f, err := unixsock.ListenFile(p)
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		files = append(files, f)
		cu.Add(func() { os.Remove(p) })
	}
	var opened []*os.File // besides files: the vsock device
	closeFiles := func() {
		closeAll(files)
		closeAll(opened)
		files, opened = nil, nil
	}
	defer closeFiles()

	logFile, err := os.OpenFile(filepath.Join(cfg.StateDir, qemuLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(d.Binary, argv...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = append([]*os.File(nil), files...)
	for _, n := range cfg.NICs {
		cmd.ExtraFiles = append(cmd.ExtraFiles, n.Tap)
	}
	for _, sh := range cfg.Shares9P {
		if sh.Dir != nil {
			cmd.ExtraFiles = append(cmd.ExtraFiles, sh.Dir)
		}
	}
	if cfg.Channel == vmm.ChannelVsock {
		// By descriptor: QEMU may run as a user the device refuses.
		f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
		opened = append(opened, f)
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	// QEMU dies with its owner, so a crashed supervisor leaves no VM behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	started := time.Now()
	// Nothing of ours but what it is given: no environment, but for a
	// clone the library that keeps its template's memory read-only.
	cmd.Env = []string{}
	rofile := ""
	if cfg.Memory.File != "" && !cfg.Memory.Shared && d.ROFile != "" {
		rofile = d.ROFile
		cmd.Env = []string{"LD_PRELOAD=" + rofile, "LODGE_RO_FILE=" + cfg.Memory.File}
	}
	// QEMU runs under confine's filter: a guest writing host files through
	// 9p gets no setuid bit, device node or xattr onto them, and QEMU's
	// Pdeathsig is tied to a thread that lives as long as QEMU. It keeps
	// only the capabilities serving 9p needs, none without 9p.
	keep := capsNone
	for _, s := range cfg.Shares9P {
		if !s.Placeholder {
			keep = caps9P
		}
	}
	if cmd.Err != nil { // not found: the same words as before the jail
		return nil, fmt.Errorf("qemu: start %s: %w", d.Binary, cmd.Err)
	}
	// It needs no root: a user of its own, which owns nothing on the
	// host but the files made for it here. A clone keeps what serving 9p
	// takes as ambient capabilities in a user namespace of its own
	// (nsIDMap), where it is not root either.
	var lease *uidlease.Lease
	uid := 0
	if d.Users != nil {
		if lease, err = d.Users.Acquire(); err != nil {
			return nil, fmt.Errorf("qemu: a user to run as: %w", err)
		}
		cu.Add(lease.Release)
		uid = lease.ID()
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		if len(keep) > 0 {
			idmap := nsIDMap(d.Users.First, uid)
			cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWUSER
			cmd.SysProcAttr.UidMappings, cmd.SysProcAttr.GidMappings = idmap, idmap
			self := uint32(d.Users.First) // uid as the namespace names it
			cmd.SysProcAttr.Credential.Uid, cmd.SysProcAttr.Credential.Gid = self, self
			cmd.SysProcAttr.AmbientCaps = keep
		}
	}
	jail, err := jailFor(cfg, cmd.Path, d.ExecDir, uid, len(keep) > 0, rofile)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	waited, err := confine.StartConfined(cmd, jail, keep)
	// Its root is QEMU's own now (or was never used): the host's empty
	// mount point goes.
	os.Remove(jail.Root)
	// QEMU holds its own copies now. Ours must go at once: while we hold a
	// listener, a connection to it waits in its backlog even if QEMU died.
	closeFiles()
	if err != nil {
		hint := ""
		if cmd.SysProcAttr.Cloneflags&unix.CLONE_NEWUSER != 0 && (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EPERM)) {
			hint = " (a clone's QEMU runs in a user namespace of its own: does this host allow them? " +
				"sysctl user.max_user_namespaces must be above 0)"
		}
		return nil, fmt.Errorf("qemu: start %s: %w%s", d.Binary, err, hint)
	}
	v := &vm{cfg: cfg, cmd: cmd, log: log, done: make(chan struct{}), qmpPath: qmpPath, agentPath: agentPath, lease: lease,
		info: vmm.Info{PID: cmd.Process.Pid, Accel: cfg.Accel, Console: filepath.Join(cfg.StateDir, ConsoleLog), Started: started}}
	go v.reap(waited)
	cu.Add(func() { v.kill() })
	// No core dump of guest memory; a bounded number of open files (9p
	// opens host files for the guest) and of threads.
	if err := confine.Limit(cmd.Process.Pid, uid, uid, map[int]unix.Rlimit{
		unix.RLIMIT_CORE: {}, unix.RLIMIT_NOFILE: {Cur: NoFile, Max: NoFile}, unix.RLIMIT_NPROC: {Cur: NProc, Max: NProc}}); err != nil {
		return nil, v.exitError("set its limits", err) // with QEMU's words if it died
	}
	log.Debug("qemu started", "pid", cmd.Process.Pid, "argv", strings.Join(argv, " "))

	qctx, cancel := context.WithTimeout(ctx, monitorTimeout)
	defer cancel()
	conn, err := unixsock.Dial(qctx, qmpPath)
	if err != nil {
		return nil, v.exitError("connect monitor", err)
	}
	v.qmp, err = ConnectQMP(qctx, conn)
	if err != nil {
		conn.Close()
		return nil, v.exitError("connect monitor", err)
	}
	log.Debug("qemu monitor ready", "after", time.Since(started).Round(time.Millisecond))
	cu.Release()
	return v, nil
}

// nsIDMap is the id map (uids and gids alike) of the user namespace a
// QEMU, host user uid, serves 9p from: every host id below first,
// where the range kept for QEMUs starts, as itself, so that a file's owner
// in the guest is its owner on the host; and uid,
// QEMU's own, as first. QEMU holds 9p's capabilities as ambient ones of
// that user, so:
//   - it has no capability in the host's user namespace: whatever the
//     kernel checks there (open_by_handle_at, /proc/sys, devices' and
//     keyrings' checks, other namespaces) refuses it;
//   - its capabilities reach no file of another QEMU's user (unmapped:
//     console logs, templates being built) nor of the namespace's owner;
//   - not root in it, it has no say over the network, IPC and PID
//     namespaces that the namespace owns.
//
// An identity map rather than a block of ids of its own with idmapped
// mounts: overlayfs (Docker's and Podman's rootfs), NFS, and tmpfs before
// Linux 6.3 cannot be idmapped. What its capabilities reach is bounded by
// its jail: its share, and its own files (the rest is read-only).
func nsIDMap(first, uid int) []syscall.SysProcIDMap {
	return []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: first}, {ContainerID: first, HostID: uid, Size: 1}}
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// vm is a running QEMU.
type vm struct {
	cfg       vmm.Config
	cmd       *exec.Cmd
	log       *slog.Logger
	info      vmm.Info
	qmpPath   string
	agentPath string
	qmp       *QMP
	lease     *uidlease.Lease // QEMU's user, free again once it is reaped
	// pidfd is the process descriptor of an adopted QEMU (Driver.Adopt,
	// cmd nil), which another process parents and reaps.
	pidfd int

	done    chan struct{} // closed when QEMU has been reaped
	waitErr error         // set before done is closed
	once    sync.Once     // guards the final cleanup
}

func (v *vm) reap(waited <-chan error) {
	v.waitErr = <-waited
	v.lease.Release()
	close(v.done)
}

// exitError explains a start-up failure, with QEMU's own words if it died.
func (v *vm) exitError(phase string, err error) error {
	select {
	case <-v.done:
		return fmt.Errorf("qemu: exited during %s (%v): %s", phase, v.waitErr, v.stderrTail())
	case <-time.After(200 * time.Millisecond):
		return fmt.Errorf("qemu: %s: %w", phase, err)
	}
}

func (v *vm) stderrTail() string {
	b, _ := os.ReadFile(filepath.Join(v.cfg.StateDir, qemuLog))
	b = bytes.TrimSpace(b)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}

func (v *vm) Info() vmm.Info        { return v.info }
func (v *vm) Done() <-chan struct{} { return v.done }

func (v *vm) Dial(ctx context.Context) (net.Conn, error) {
	switch v.cfg.Channel {
	case vmm.ChannelVsock:
		for {
			c, err := transport.DialVsock(ctx, v.cfg.VsockCID, transport.VsockAgentPort)
			if err == nil {
				return c, nil
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("qemu: dial agent: %w", err)
			case <-v.done:
				return nil, fmt.Errorf("qemu: dial agent: %w", vmm.ErrExited)
			case <-time.After(20 * time.Millisecond):
			}
		}
	default:
		c, err := unixsock.Dial(ctx, v.agentPath)
		if err != nil {
			return nil, fmt.Errorf("qemu: dial agent: %w", err)
		}
		return c, nil
	}
}

// Shutdown asks QEMU to quit, kills it if it does not, and removes its
// sockets. The guest holds no state worth a graceful poweroff.
func (v *vm) Shutdown(ctx context.Context) error {
	select {
	case <-v.done:
	default:
		if v.qmp != nil {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			err := v.qmp.Quit(qctx)
			cancel()
			if err != nil {
				v.log.Debug("qmp quit", "err", err)
			}
		}
		select {
		case <-v.done:
		case <-time.After(2 * time.Second):
			v.log.Warn("qemu did not quit, killing it", "pid", v.info.PID)
			v.kill()
		case <-ctx.Done():
			v.kill()
		}
	}
	v.release()
	return nil
}

// kill ends QEMU by force and waits for it.
func (v *vm) kill() {
	select {
	case <-v.done:
	default:
		if v.cmd != nil {
			v.cmd.Process.Kill()
		} else {
			unix.PidfdSendSignal(v.pidfd, unix.SIGKILL, nil, 0)
		}
		<-v.done
	}
	v.release()
}

func (v *vm) release() {
	v.once.Do(func() {
		if v.qmp != nil {
			v.qmp.Close()
		}
		if v.cmd == nil { // adopted: its files are its owner's
			<-v.done
			unix.Close(v.pidfd)
			return
		}
		os.Remove(v.qmpPath)
		os.Remove(v.agentPath)
	})
}

func (v *vm) Wait(ctx context.Context) error {
	select {
	case <-v.done:
		if v.waitErr != nil {
			return fmt.Errorf("%w: %w", vmm.ErrExited, v.waitErr)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrNoQEMU reports a missing QEMU binary.
var ErrNoQEMU = errors.New("qemu not found")

// FindBinary resolves the QEMU binary path.
func FindBinary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%w: %s (install Debian's qemu-system-x86 or set vmm.qemu in the config)", ErrNoQEMU, name)
	}
	return p, nil
}

// noMergeAny turns off process-wide KSM for this process (prctl
// PR_SET_MEMORY_MERGE, Linux 6.4 on), which QEMU would inherit across fork
// and exec: on a host that enables it for the service running Lodge
// (systemd's MemoryKSM=), every anonymous page of QEMU would be offered to
// KSM, whatever its mem-merge. The setting is the process's, not the
// thread's; it changes nothing for a VM already running (its own process
// keeps what it inherited), and kernels without it or without KSM say
// EINVAL. Failing, the VM does not start: its pages would be merged.
func noMergeAny() error {
	if err := unix.Prctl(unix.PR_SET_MEMORY_MERGE, 0, 0, 0, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("process-wide KSM is on for this process and could not be turned off for QEMU "+
			"(prctl PR_SET_MEMORY_MERGE: %w); set [vmm] merge_pages = true to accept merged guest memory", err)
	}
	return nil
}
