package runtimecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"

	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/hostmount"
	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/shim"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// createFlags are the options `create` and `run` share.
type createFlags struct {
	bundle, pidFile, consoleSocket string
	preserveFDs                    int
	noPivot, noNewKeyring, detach  bool
}

func parseCreate(name string, args []string, withDetach bool) (createFlags, string, error) {
	var f createFlags
	fs := newFlagSet(name)
	fs.StringVar(&f.bundle, "bundle", ".", "bundle directory")
	fs.StringVar(&f.bundle, "b", ".", "bundle directory")
	fs.StringVar(&f.pidFile, "pid-file", "", "write the container's host PID here")
	fs.StringVar(&f.consoleSocket, "console-socket", "", "unix socket that receives the terminal master")
	fs.IntVar(&f.preserveFDs, "preserve-fds", 0, "accepted; descriptors cannot cross into a VM")
	fs.BoolVar(&f.noPivot, "no-pivot", false, "accepted; the guest always pivots")
	fs.BoolVar(&f.noNewKeyring, "no-new-keyring", false, "accepted")
	if withDetach {
		fs.BoolVar(&f.detach, "detach", false, "detach from the container")
		fs.BoolVar(&f.detach, "d", false, "detach from the container")
	}
	if err := parse(fs, args); err != nil {
		return f, "", err
	}
	if fs.NArg() != 1 {
		return f, "", usageError{name + ": expects exactly one container id"}
	}
	return f, fs.Arg(0), checkID(fs.Arg(0))
}

func cmdCreate(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	f, id, err := parseCreate("create", args, false)
	if err != nil {
		return err
	}
	cmd, err := createContainer(g, f, id, true)
	if err != nil {
		return err
	}
	cmd.Process.Release() // it outlives us; the caller (or init) reaps it
	return nil
}

// ownNetNS says whether spec asks for a new network namespace (no path).
func ownNetNS(spec *specs.Spec) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// createContainer validates the bundle, reserves the id and starts the
// supervisor, returning once the container is created (or has failed, with
// nothing left behind).
func createContainer(g globals, f createFlags, id string, detached bool) (*exec.Cmd, error) {
	b, err := oci.LoadBundle(f.bundle)
	if err != nil {
		return nil, err
	}
	if b.Spec.Process.Terminal && f.consoleSocket == "" && detached {
		return nil, errors.New("cannot allocate a terminal for a detached container without --console-socket")
	}
	if f.consoleSocket != "" {
		if f.consoleSocket, err = filepath.Abs(f.consoleSocket); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(g.root, 0o700); err != nil {
		return nil, fmt.Errorf("state root %s: %w", g.root, err)
	}
	dir := containerDir(g.root, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("container with id %q already exists", id)
		}
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := append(g.args(dir), "__supervise", "--bundle", b.Dir)
	if f.consoleSocket != "" {
		args = append(args, "--console-socket", f.consoleSocket)
	}
	// A new network namespace without a path: the supervisor, whose pid
	// the engine sees as the container's, gets one of its own (the host
	// side of the VM's network, where an engine's hook such as Docker's
	// puts the container's interface) and keeps this one (fd 4) to run the
	// hooks in, as runc runs them.
	var runtimeNS *os.File
	if ownNetNS(b.Spec) {
		if runtimeNS, err = os.Open("/proc/thread-self/ns/net"); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		defer runtimeNS.Close()
		args = append(args, "--runtime-netns")
	}
	cmd := exec.Command("/proc/self/exe", append(args, id)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w} // fd 3: syncFD
	// Its own session: terminal signals reach the CLI, which forwards them once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if runtimeNS != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, runtimeNS) // fd 4
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start supervisor: %w", err)
	}
	// Until the supervisor writes its own record, this one lets `delete`
	// find (and end) a supervisor that is still creating.
	pidStart, _ := procid.StartTime(cmd.Process.Pid)
	(&record{ID: id, Bundle: b.Dir, Rootfs: b.Rootfs, Pid: cmd.Process.Pid, PidStart: pidStart,
		Status: statusCreating, Created: time.Now().UTC()}).save(g.root)
	var m syncMsg
	err = json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&m)
	r.Close()
	if err != nil || !m.OK {
		cmd.Wait()
		cleanupContainer(g.root, id)
		if l := b.Spec.Linux; l != nil {
			hostcg.Remove(l.CgroupsPath)
		}
		if m.Error != "" {
			return nil, errors.New(m.Error)
		}
		return nil, fmt.Errorf("supervisor died while creating the container (see %s)", filepath.Join(dir, superLog))
	}
	if f.pidFile != "" {
		if err := writePidFile(f.pidFile, cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	return cmd, nil
}

// args are the global options a child lodge-runtime needs: the same root,
// and the same log (or the container's own log file).
func (g globals) args(dir string) []string {
	a := []string{"--root", g.root, "--log-format", g.logFormat}
	if g.logFile != "" {
		a = append(a, "--log", g.logFile)
	} else {
		a = append(a, "--log", filepath.Join(dir, superLog))
	}
	if g.debug {
		a = append(a, "--debug")
	}
	return a
}

func writePidFile(path string, pid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs))
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, abs)
}

func cmdStart(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	id, err := oneID("start", args)
	if err != nil {
		return err
	}
	rec, err := loadRecord(g.root, id)
	if err != nil {
		return err
	}
	switch rec.Status {
	case statusCreated:
	case statusStopped:
		return errors.New("cannot start a container that has stopped")
	default:
		return fmt.Errorf("cannot start an already %s container", rec.Status)
	}
	task, closeFn, err := dialTask(ctx, g.root, id)
	if err != nil {
		return err
	}
	defer closeFn()
	_, err = task.Start(ctx, &taskapi.StartRequest{ID: id})
	return shim.FromWire(err)
}

func oneID(name string, args []string) (string, error) {
	fs := newFlagSet(name)
	if err := parse(fs, args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		return "", usageError{name + ": expects exactly one container id"}
	}
	return fs.Arg(0), checkID(fs.Arg(0))
}

// cmdRun is create + start, then (unless detached) wait for the container,
// relay signals to it, delete it, and exit with its status.
func cmdRun(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	f, id, err := parseCreate("run", args, true)
	if err != nil {
		return err
	}
	code, err := runContainer(ctx, g, log, f, id)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// Run is `lodge-runtime --root ROOT run [-d] [--console-socket SOCKET]
// --bundle BUNDLE ID` for another command of this process (`lodge run`):
// err reports Lodge's own failure, code the container's exit status. The
// supervisor is this executable called with "__supervise" (see
// Supervises).
func Run(ctx context.Context, log *slog.Logger, root, logFile, bundle, id string, detach bool, consoleSocket string) (code int, err error) {
	if err := checkID(id); err != nil {
		return 0, err
	}
	g := globals{root: root, logFile: logFile, logFormat: "text"}
	return runContainer(ctx, g, log, createFlags{bundle: bundle, detach: detach, consoleSocket: consoleSocket}, id)
}

// Create is `lodge-runtime --root ROOT create [--console-socket SOCKET]
// --bundle BUNDLE ID` for another command of this process (`lodge
// create`); the container's stdio is this process's at the call.
func Create(root, logFile, bundle, id, consoleSocket string) error {
	if err := checkID(id); err != nil {
		return err
	}
	g := globals{root: root, logFile: logFile, logFormat: "text"}
	cmd, err := createContainer(g, createFlags{bundle: bundle, consoleSocket: consoleSocket}, id, true)
	if err != nil {
		return err
	}
	return cmd.Process.Release()
}

// Supervises says whether args start one of the runtime's own helper
// processes, which this executable made with the runtime's global flags
// first (globals.args): a container's supervisor (Run) or a detached
// exec's holder (exec -d). The executable must then hand them to Main.
// Only the command word after those flags counts: `lodge run IMAGE echo
// __supervise` is lodge's.
func Supervises(args []string) bool {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--root", "--log-format", "--log":
			i++ // the flag's value
		case "--debug":
		case "__supervise", "__exec-hold":
			return true
		default:
			return false
		}
	}
	return false
}

func runContainer(ctx context.Context, g globals, log *slog.Logger, f createFlags, id string) (int, error) {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	cmd, err := createContainer(g, f, id, f.detach)
	if err != nil {
		return 0, err
	}
	// A foreground process with a terminal in the guest and none of a
	// console socket's: this process's terminal is its, made raw, and
	// its size is the guest terminal's, now and at each change.
	terminal := false
	if !f.detach && f.consoleSocket == "" {
		if b, err := oci.LoadBundle(f.bundle); err == nil && b.Spec.Process.Terminal {
			terminal = true
			defer rawTerminal()()
		}
	}
	task, closeFn, err := dialTask(ctx, g.root, id)
	if err == nil {
		if terminal {
			resizeFromStdin(ctx, task, id, "")
		}
		_, err = task.Start(ctx, &taskapi.StartRequest{ID: id})
		err = shim.FromWire(err)
		// Hang up: the supervisor, once the container has exited, waits
		// for its clients to go before it exits (see supervisor.close).
		closeFn()
	}
	if err != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		cleanupContainer(g.root, id)
		return 0, err
	}
	if f.detach {
		cmd.Process.Release()
		return 0, nil
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGWINCH && terminal {
					if task, closeFn, err := dialTask(ctx, g.root, id); err == nil {
						resizeFromStdin(ctx, task, id, "")
						closeFn()
					}
					continue
				}
				n, ok := forwardable(s)
				if !ok {
					continue
				}
				if err := forwardSignal(ctx, g.root, id, n); err != nil {
					log.Debug("forward signal", "signal", n, "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	werr := cmd.Wait()
	close(done)
	code := exitCodeOf(cmd, werr)
	if err := deleteStopped(ctx, log, g.root, id); err != nil {
		log.Warn("delete container", "container_id", id, "err", err)
	}
	return code, nil
}

// forwardSignal sends signal n to the container's init on a connection of
// its own.
func forwardSignal(ctx context.Context, root, id string, n syscall.Signal) error {
	task, closeFn, err := dialTask(ctx, root, id)
	if err != nil {
		return err
	}
	defer closeFn()
	_, err = task.Kill(ctx, &taskapi.KillRequest{ID: id, Signal: uint32(n)})
	return err
}

// exitCodeOf turns the supervisor's wait status into runc's exit code.
func exitCodeOf(cmd *exec.Cmd, err error) int {
	ps := cmd.ProcessState
	if ps == nil {
		return 255
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// deleteStopped runs poststop hooks and removes a stopped container's
// state, cleaning up after a supervisor that died.
// A failing poststop hook is a warning: the delete goes on (runtime spec).
func deleteStopped(ctx context.Context, log *slog.Logger, root, id string) error {
	rec, err := loadRecord(root, id)
	if err != nil {
		return err
	}
	// The record says stopped as soon as the container exits, while the
	// supervisor may still be tearing the VM down in this directory: wait
	// for it, or a container created next under the same id would lose its
	// files to that teardown.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := waitGone(wctx, rec); err != nil {
		syscall.Kill(rec.Pid, syscall.SIGKILL)
		waitGone(ctx, rec)
	}
	cancel()
	if rec.Bundle != "" {
		if b, err := oci.LoadBundle(rec.Bundle); err == nil && b.Spec.Hooks != nil {
			if err := shim.RunHooks(ctx, "poststop", b.Spec.Hooks.Poststop, ociState(rec)); err != nil {
				log.Warn("poststop hook failed", "container_id", id, "err", err)
			}
		}
	}
	// QEMU dies with the supervisor (Pdeathsig), but not
	// instantly: make sure it is gone before its mounts and state.
	kctx, kcancel := context.WithTimeout(context.Background(), 5*time.Second)
	procid.KillAll(kctx, rec.VMProcs)
	kcancel()
	if rec.CgroupPath != "" {
		if err := hostcg.Remove(rec.CgroupPath); err != nil {
			log.Warn("remove host cgroup", "container_id", id, "err", err)
		}
	}
	return cleanupContainer(root, id)
}

// cleanupContainer removes what a supervisor leaves when it dies: mounts
// below the container's directory, then the directory.
func cleanupContainer(root, id string) error {
	dir := containerDir(root, id)
	sandbox.KillStrays(dir)
	if err := hostmount.UnmountBelow(dir); err != nil {
		return err
	}
	for i := 0; ; i++ {
		err := os.RemoveAll(dir)
		if err == nil || i == 10 {
			return err
		}
		time.Sleep(50 * time.Millisecond) // a dying supervisor may still remove its sockets
	}
}

// waitGone waits for a supervisor to exit.
func waitGone(ctx context.Context, rec *record) error {
	for alive(rec.Pid, rec.PidStart) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %s: supervisor (pid %d) did not exit", rec.ID, rec.Pid)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
