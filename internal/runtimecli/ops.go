package runtimecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/shim"
)

// stateJSON is what `state` and `list --format json` print (runc's shape).
type stateJSON struct {
	OCIVersion  string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Owner       string            `json:"owner"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func toStateJSON(r *record) stateJSON {
	pid := r.Pid
	if r.Status == statusStopped {
		pid = 0
	}
	return stateJSON{OCIVersion: specs.Version, ID: r.ID, Pid: pid, Status: r.Status, Bundle: r.Bundle,
		Rootfs: r.Rootfs, Created: r.Created, Owner: "", Annotations: withStart(r.Annotations, r.Start)}
}

// Annotations `state` adds to the spec's: how the sandbox started.
const (
	annStart       = "io.lodge.start"         // clone or cold
	annStartReason = "io.lodge.start.reason"  // why it cold-booted
	annTemplate    = "io.lodge.template.key"  // the template a clone came from
	annPooled      = "io.lodge.start.pooled"  // "true": a clone taken from the pool
	annVCPUs       = "io.lodge.vm.vcpus"      // the VM's vCPUs
	annMemory      = "io.lodge.vm.memory_mib" // the VM's memory, MiB
)

func withStart(spec map[string]string, st *sandbox.StartInfo) map[string]string {
	if st == nil || st.Path == "" {
		return spec
	}
	ann := make(map[string]string, len(spec)+3)
	for k, v := range spec {
		ann[k] = v
	}
	ann[annStart] = st.Path
	if st.Reason != "" {
		ann[annStartReason] = st.Reason
	}
	if st.Template != "" {
		ann[annTemplate] = st.Template
	}
	if st.Pooled {
		ann[annPooled] = "true"
	}
	if st.VCPUs > 0 {
		ann[annVCPUs], ann[annMemory] = strconv.Itoa(st.VCPUs), strconv.Itoa(st.MemoryMiB)
	}
	return ann
}

// ociState is the state hooks read on stdin: the spec's annotations only,
// as runc passes them.
func ociState(r *record) specs.State {
	s := toStateJSON(r)
	return specs.State{Version: s.OCIVersion, ID: s.ID, Status: specs.ContainerState(s.Status), Pid: s.Pid,
		Bundle: s.Bundle, Annotations: r.Annotations}
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func cmdState(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	id, err := oneID("state", args)
	if err != nil {
		return err
	}
	rec, err := loadRecord(g.root, id)
	if err != nil {
		return err
	}
	return printJSON(env.IO.Out, toStateJSON(rec))
}

// rpcTimeout bounds a call to a supervisor that should answer at once.
const rpcTimeout = 30 * time.Second

// withTask runs f against a live container's supervisor.
func withTask(ctx context.Context, g globals, id string, f func(taskapi.TaskService, *record) error) error {
	rec, err := loadRecord(g.root, id)
	if err != nil {
		return err
	}
	if rec.Status == statusStopped {
		return fmt.Errorf("container %s is not running", id)
	}
	task, closeFn, err := dialTask(ctx, g.root, id)
	if err != nil {
		return err
	}
	defer closeFn()
	return shim.FromWire(f(task, rec))
}

func cmdKill(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("kill")
	all := fs.Bool("all", false, "signal every process of the container")
	fs.BoolVar(all, "a", false, "signal every process of the container")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageError{"kill: expects a container id and an optional signal"}
	}
	id := fs.Arg(0)
	if err := checkID(id); err != nil {
		return err
	}
	sig := unix.SIGTERM
	if fs.NArg() == 2 {
		var err error
		if sig, err = parseSignal(fs.Arg(1)); err != nil {
			return err
		}
	}
	return withTask(ctx, g, id, func(t taskapi.TaskService, _ *record) error {
		_, err := t.Kill(ctx, &taskapi.KillRequest{ID: id, Signal: uint32(sig), All: *all})
		return err
	})
}

// parseSignal accepts 9, KILL and SIGKILL.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, usageError{fmt.Sprintf("invalid signal %q", s)}
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return n, nil
	}
	return 0, usageError{fmt.Sprintf("unknown signal %q", s)}
}

func cmdDelete(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("delete")
	force := fs.Bool("force", false, "kill the container if it is running")
	fs.BoolVar(force, "f", false, "kill the container if it is running")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"delete: expects exactly one container id"}
	}
	id := fs.Arg(0)
	rec, err := loadRecord(g.root, id)
	if err != nil {
		if *force && errors.Is(err, errNoContainer) {
			return nil
		}
		return err
	}
	switch rec.Status {
	case statusStopped:
	case statusCreating:
		// Its supervisor is still creating it: end the supervisor (its VM
		// dies with it).
		if rec.Pid > 0 {
			syscall.Kill(rec.Pid, syscall.SIGKILL)
			if err := waitGone(ctx, rec); err != nil {
				return err
			}
		}
	case statusCreated:
		// Never started: delete kills it, as runc does.
		if err := killAndWait(ctx, g, rec); err != nil {
			return err
		}
	default:
		if !*force {
			return fmt.Errorf("cannot delete container %s that is not stopped: %s (use --force)", id, rec.Status)
		}
		if err := killAndWait(ctx, g, rec); err != nil {
			return err
		}
	}
	err = deleteStopped(ctx, log, g.root, id)
	if errors.Is(err, errNoContainer) {
		return nil // gone meanwhile (a failed create cleans up after itself)
	}
	return err
}

func killAndWait(ctx context.Context, g globals, rec *record) error {
	if rec.Pid > 0 {
		// A supervisor that does not answer is killed below.
		kctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		withTask(kctx, g, rec.ID, func(t taskapi.TaskService, _ *record) error {
			_, err := t.Kill(kctx, &taskapi.KillRequest{ID: rec.ID, Signal: uint32(unix.SIGKILL), All: true})
			return err
		})
		cancel()
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitGone(wctx, rec); err != nil {
		// The supervisor does not answer: end it; QEMU dies with it.
		syscall.Kill(rec.Pid, syscall.SIGKILL)
		return waitGone(ctx, rec)
	}
	return nil
}

func cmdList(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("list")
	format := fs.String("format", "table", "table or json")
	fs.StringVar(format, "f", "table", "table or json")
	quiet := fs.Bool("quiet", false, "print only ids")
	fs.BoolVar(quiet, "q", false, "print only ids")
	if err := parse(fs, args); err != nil {
		return err
	}
	recs, err := listRecords(g.root)
	if err != nil {
		return err
	}
	if *quiet {
		for _, r := range recs {
			fmt.Fprintln(env.IO.Out, r.ID)
		}
		return nil
	}
	switch *format {
	case "json":
		out := []stateJSON{}
		for _, r := range recs {
			out = append(out, toStateJSON(r))
		}
		return printJSON(env.IO.Out, out)
	case "table":
		w := tabwriter.NewWriter(env.IO.Out, 12, 1, 3, ' ', 0)
		fmt.Fprint(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n")
		for _, r := range recs {
			s := toStateJSON(r)
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\troot\n", s.ID, s.Pid, s.Status, s.Bundle, s.Created.Format(time.RFC3339Nano))
		}
		return w.Flush()
	}
	return usageError{fmt.Sprintf("list: unknown format %q", *format)}
}

// cmdPs lists the container's processes. Their PIDs are the guest's: the
// processes do not exist on the host.
func cmdPs(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("ps")
	format := fs.String("format", "table", "table or json")
	fs.StringVar(format, "f", "table", "table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return usageError{"ps: expects a container id"}
	}
	id := fs.Arg(0)
	if *format != "table" && *format != "json" {
		return usageError{fmt.Sprintf("ps: unknown format %q", *format)}
	}
	return withTask(ctx, g, id, func(t taskapi.TaskService, _ *record) error {
		resp, err := t.Pids(ctx, &taskapi.PidsRequest{ID: id})
		if err != nil {
			return err
		}
		if *format == "json" {
			pids := []int{}
			for _, p := range resp.Processes {
				pids = append(pids, int(p.Pid))
			}
			return printJSON(env.IO.Out, pids)
		}
		w := tabwriter.NewWriter(env.IO.Out, 6, 1, 2, ' ', 0)
		fmt.Fprint(w, "PID\n")
		for _, p := range resp.Processes {
			fmt.Fprintf(w, "%d\n", p.Pid)
		}
		return w.Flush()
	})
}

func cmdPause(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	id, err := oneID("pause", args)
	if err != nil {
		return err
	}
	return withTask(ctx, g, id, func(t taskapi.TaskService, _ *record) error {
		_, err := t.Pause(ctx, &taskapi.PauseRequest{ID: id})
		return err
	})
}

func cmdResume(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	id, err := oneID("resume", args)
	if err != nil {
		return err
	}
	return withTask(ctx, g, id, func(t taskapi.TaskService, _ *record) error {
		_, err := t.Resume(ctx, &taskapi.ResumeRequest{ID: id})
		return err
	})
}
