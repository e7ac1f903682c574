package runtimecli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"strings"
	"syscall"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/shim"
	"github.com/lodgeruntime/lodge/internal/state"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type execFlags struct {
	process, pidFile, consoleSocket, cwd, user, label, apparmor string
	tty, detach, noNewPrivs                                     bool
	env, caps, gids                                             stringList
	preserveFDs                                                 int
}

// cmdExec runs a process in a running container. Attached, this process
// relays for it and exits with its status; with --detach a holder process
// does that, and --pid-file names the holder.
func cmdExec(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	var f execFlags
	fs := newFlagSet("exec")
	fs.StringVar(&f.process, "process", "", "process.json")
	fs.StringVar(&f.process, "p", "", "process.json")
	fs.BoolVar(&f.tty, "tty", false, "allocate a terminal")
	fs.BoolVar(&f.tty, "t", false, "allocate a terminal")
	fs.BoolVar(&f.detach, "detach", false, "detach")
	fs.BoolVar(&f.detach, "d", false, "detach")
	fs.StringVar(&f.pidFile, "pid-file", "", "write the process's host PID here")
	fs.StringVar(&f.consoleSocket, "console-socket", "", "unix socket that receives the terminal master")
	fs.StringVar(&f.cwd, "cwd", "", "working directory")
	fs.StringVar(&f.user, "user", "", "uid[:gid]")
	fs.StringVar(&f.user, "u", "", "uid[:gid]")
	fs.Var(&f.env, "env", "KEY=VALUE (repeatable)")
	fs.Var(&f.env, "e", "KEY=VALUE (repeatable)")
	fs.Var(&f.caps, "cap", "capability (repeatable)")
	fs.Var(&f.caps, "c", "capability (repeatable)")
	fs.Var(&f.gids, "additional-gids", "gid (repeatable)")
	fs.Var(&f.gids, "g", "gid (repeatable)")
	fs.BoolVar(&f.noNewPrivs, "no-new-privs", false, "set no_new_privs")
	fs.StringVar(&f.label, "process-label", "", "accepted")
	fs.StringVar(&f.apparmor, "apparmor", "", "accepted")
	fs.IntVar(&f.preserveFDs, "preserve-fds", 0, "accepted; descriptors cannot cross into a VM")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usageError{"exec: expects a container id"}
	}
	id := fs.Arg(0)
	rec, err := loadRecord(g.root, id)
	if err != nil {
		return err
	}
	// As runc: a created container takes an exec (its namespaces and root
	// are made; docker cp into a created container needs it), a paused
	// or stopped one does not.
	if rec.Status != statusRunning && rec.Status != statusCreated {
		return fmt.Errorf("cannot exec in a %s container", rec.Status)
	}
	proc, err := execProcess(rec, f, fs.Args()[1:])
	if err != nil {
		return err
	}
	if proc.Terminal && f.consoleSocket == "" && f.detach {
		return errors.New("cannot allocate a terminal for a detached exec without --console-socket")
	}
	if f.consoleSocket != "" {
		if f.consoleSocket, err = filepath.Abs(f.consoleSocket); err != nil {
			return err
		}
	}
	if f.detach {
		return detachExec(g, id, proc, f)
	}
	if f.pidFile != "" {
		if err := writePidFile(f.pidFile, os.Getpid()); err != nil {
			return err
		}
	}
	code, err := runExec(ctx, g, log, id, execRun{proc: proc, consoleSocket: f.consoleSocket, started: func() {}})
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// execProcess builds the process from -p, or from the container's own
// process with the command line's changes (as runc does).
func execProcess(rec *record, f execFlags, args []string) (*specs.Process, error) {
	var p specs.Process
	if f.process != "" {
		b, err := os.ReadFile(f.process)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%s: not a valid process.json: %w", f.process, err)
		}
		if len(p.Args) == 0 {
			return nil, fmt.Errorf("%s: process has no args", f.process)
		}
		return &p, nil
	}
	if len(args) == 0 {
		return nil, usageError{"exec: expects a command after the container id (or -p process.json)"}
	}
	b, err := oci.LoadBundle(rec.Bundle)
	if err != nil {
		return nil, fmt.Errorf("read the container's bundle: %w", err)
	}
	p = *b.Spec.Process
	p.Args, p.Terminal = args, f.tty
	p.Env = append(append([]string{}, p.Env...), f.env...)
	if f.cwd != "" {
		p.Cwd = f.cwd
	}
	if f.user != "" {
		u, gs, _ := strings.Cut(f.user, ":")
		uid, err := strconv.ParseUint(u, 10, 32)
		if err != nil {
			return nil, usageError{fmt.Sprintf("exec: --user %q: want uid[:gid]", f.user)}
		}
		p.User.UID = uint32(uid)
		if gs != "" {
			gid, err := strconv.ParseUint(gs, 10, 32)
			if err != nil {
				return nil, usageError{fmt.Sprintf("exec: --user %q: want uid[:gid]", f.user)}
			}
			p.User.GID = uint32(gid)
		}
	}
	for _, gstr := range f.gids {
		gid, err := strconv.ParseUint(gstr, 10, 32)
		if err != nil {
			return nil, usageError{fmt.Sprintf("exec: --additional-gids %q is not a number", gstr)}
		}
		p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(gid))
	}
	if len(f.caps) > 0 {
		c := *p.Capabilities
		for _, cp := range f.caps {
			c.Bounding, c.Effective, c.Permitted = append(c.Bounding, cp), append(c.Effective, cp), append(c.Permitted, cp)
		}
		p.Capabilities = &c
	}
	if f.noNewPrivs {
		p.NoNewPrivileges = true
	}
	return &p, nil
}

func newExecID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "exec-" + hex.EncodeToString(b)
}

// execRun is one exec of lodge-runtime: the process, where its terminal
// goes (runc's --console-socket), and what to do once it has started.
type execRun struct {
	proc          *specs.Process
	consoleSocket string
	started       func()
}

// runExec starts e.proc in the container through its supervisor, with this
// process's stdio, relays signals to it, and returns its exit code.
func runExec(ctx context.Context, g globals, log *slog.Logger, id string, e execRun) (int, error) {
	proc, consoleSocket := e.proc, e.consoleSocket
	dir := containerDir(g.root, id)
	task, closeFn, err := dialTask(ctx, g.root, id)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	execID := newExecID()
	req := &taskapi.ExecProcessRequest{ID: id, ExecID: execID, Terminal: proc.Terminal}
	if proc.Terminal && consoleSocket != "" {
		req.Stdin, req.Stdout = schemeConsole+consoleSocket, schemeConsole+consoleSocket
	} else {
		token, err := passStdio(dir)
		if err != nil {
			return 0, err
		}
		req.Stdin, req.Stdout = schemeFDPass+token+"/0", schemeFDPass+token+"/1"
		if !proc.Terminal {
			req.Stderr = schemeFDPass + token + "/2"
		}
	}
	terminal := proc.Terminal && consoleSocket == ""
	if w, h, err := winsize(os.Stdin); terminal && err == nil && w > 0 && h > 0 && proc.ConsoleSize == nil {
		// Its terminal starts at this one's size (it may ask at once).
		sized := *proc
		sized.ConsoleSize = &specs.Box{Width: uint(w), Height: uint(h)}
		proc = &sized
	}
	b, err := json.Marshal(proc)
	if err != nil {
		return 0, err
	}
	req.Spec = &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}
	if _, err := task.Exec(ctx, req); err != nil {
		return 0, shim.FromWire(err)
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	if terminal {
		// Raw before the process starts, as run's is: what it prints
		// at once, and what is typed as it starts, pass untouched (no
		// echo of this terminal's own, no \r added).
		defer rawTerminal()()
	}
	if _, err := task.Start(ctx, &taskapi.StartRequest{ID: id, ExecID: execID}); err != nil {
		task.Delete(ctx, &taskapi.DeleteRequest{ID: id, ExecID: execID})
		return 0, shim.FromWire(err)
	}
	e.started()
	go func() {
		for s := range sigs {
			if s == syscall.SIGWINCH && terminal {
				resizeFromStdin(ctx, task, id, execID)
				continue
			}
			n, ok := forwardable(s)
			if !ok {
				continue
			}
			task.Kill(ctx, &taskapi.KillRequest{ID: id, ExecID: execID, Signal: uint32(n)})
		}
	}()
	// A context that ends (lodge exec --timeout) ends the process with
	// SIGKILL; the wait goes on for its status.
	waitCtx := context.WithoutCancel(ctx)
	waited := make(chan struct{})
	defer close(waited)
	go func() {
		select {
		case <-ctx.Done():
			task.Kill(waitCtx, &taskapi.KillRequest{ID: id, ExecID: execID, Signal: uint32(syscall.SIGKILL)})
		case <-waited:
		}
	}()
	w, err := task.Wait(waitCtx, &taskapi.WaitRequest{ID: id, ExecID: execID})
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", execID, shim.FromWire(err))
	}
	task.Delete(waitCtx, &taskapi.DeleteRequest{ID: id, ExecID: execID})
	return int(w.ExitStatus), nil
}

// detachExec hands the exec to a holder process and returns once the
// process runs. The holder lives as long as the process and exits with its
// status (containerd's runc shim and conmon wait for it).
func detachExec(g globals, id string, proc *specs.Process, f execFlags) error {
	dir := containerDir(g.root, id)
	pfile := filepath.Join(dir, "exec-"+newToken()[:12]+".json")
	if err := state.Write(pfile, proc); err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		os.Remove(pfile)
		return err
	}
	args := append(g.args(dir), "__exec-hold", "--process", pfile)
	if f.consoleSocket != "" {
		args = append(args, "--console-socket", f.consoleSocket)
	}
	cmd := exec.Command("/proc/self/exe", append(args, id)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		os.Remove(pfile)
		return err
	}
	var m syncMsg
	err = json.NewDecoder(io.LimitReader(r, 64<<10)).Decode(&m)
	r.Close()
	if err != nil || !m.OK {
		cmd.Wait()
		if m.Error != "" {
			return errors.New(m.Error)
		}
		return errors.New("exec holder died before the process started")
	}
	if f.pidFile != "" {
		if err := writePidFile(f.pidFile, cmd.Process.Pid); err != nil {
			return err
		}
	}
	return cmd.Process.Release()
}

// cmdExecHold is the hidden `__exec-hold` command behind exec --detach.
func cmdExecHold(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("__exec-hold")
	pfile := fs.String("process", "", "")
	consoleSocket := fs.String("console-socket", "", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	report := syncReporter()
	var proc specs.Process
	err := state.Read(*pfile, &proc)
	os.Remove(*pfile)
	if err != nil {
		report(err)
		return exitCode(1) // the caller prints the error
	}
	reported := false
	code, err := runExec(ctx, g, log, fs.Arg(0), execRun{proc: &proc, consoleSocket: *consoleSocket,
		started: func() { report(nil); reported = true }})
	if err != nil {
		if !reported {
			report(err)
			return exitCode(1)
		}
		return err
	}
	os.Exit(code)
	return nil
}
