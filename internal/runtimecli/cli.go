package runtimecli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/host"
)

// DefaultRoot is where sandbox state lives (runc uses /run/runc).
const DefaultRoot = "/run/lodge-runtime"

// Version is the runtime's version, set by main.
type Version struct {
	Lodge string
	Spec  string
}

// IO is the process's standard streams.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// Env is what main hands the command line.
type Env struct {
	IO      IO
	Version Version
	// Resolve builds the host environment once flags have set up logging.
	Resolve func(log *slog.Logger) (*host.Env, error)
}

// globals are runc's global options.
type globals struct {
	root, logFile, logFormat string
	debug, systemdCgroup     bool
	version                  bool
}

// usageError is a command-line mistake: exit status 2 and one line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Main runs the command line and returns the exit status.
func Main(ctx context.Context, args []string, env Env) int {
	err := dispatch(ctx, args, env)
	var exit exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return int(exit)
	}
	fmt.Fprintf(env.IO.Err, "lodge-runtime: %s\n", oneLine(err))
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// exitCode carries a container's exit status out of a command.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func oneLine(err error) string {
	s := err.Error()
	first, rest, ok := strings.Cut(s, "\n")
	if !ok {
		return s
	}
	// Multi-line detail (a console tail) stays below the summary line.
	return first + "\n" + rest
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return usageError{fs.Name() + ": see the runc-compatible usage in the README"}
		}
		return usageError{fs.Name() + ": " + err.Error()}
	}
	return nil
}

func dispatch(ctx context.Context, args []string, env Env) error {
	var g globals
	fs := newFlagSet("lodge-runtime")
	fs.StringVar(&g.root, "root", DefaultRoot, "state directory")
	fs.StringVar(&g.logFile, "log", "", "log file (default stderr)")
	fs.StringVar(&g.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&g.debug, "debug", false, "debug logging")
	fs.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "accepted for runc compatibility")
	fs.BoolVar(&g.version, "version", false, "print the version")
	fs.BoolVar(&g.version, "v", false, "print the version")
	if err := parse(fs, args); err != nil {
		return err
	}
	if g.version {
		fmt.Fprintf(env.IO.Out, "lodge-runtime version %s\nspec: %s\n", env.Version.Lodge, env.Version.Spec)
		return nil
	}
	if g.logFormat != "text" && g.logFormat != "json" {
		return usageError{fmt.Sprintf("--log-format %q: want text or json", g.logFormat)}
	}
	log, closeLog, err := newLogger(g, env.IO.Err)
	if err != nil {
		return err
	}
	defer closeLog()
	err = run(ctx, g, log, env, fs.Args())
	var exit exitCode
	if err != nil && g.logFile != "" && !errors.As(err, &exit) {
		// As runc: the error goes to --log too, where containerd's runc
		// shim (and so Docker) reads the last error-level entry to tell
		// the user what went wrong.
		log.Error(oneLine(err))
	}
	return err
}

func run(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	if len(args) == 0 {
		return usageError{"no command given (commands: " + commandNames() + ")"}
	}
	cmd, ok := commands[args[0]]
	if !ok {
		return usageError{fmt.Sprintf("unknown command %q (commands: %s)", args[0], commandNames())}
	}
	return cmd(ctx, g, log, env, args[1:])
}

type command func(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error

// commands are runc's, plus two hidden ones (names starting "__") that
// lodge-runtime runs as its own detached children.
var commands = map[string]command{
	"create": cmdCreate, "start": cmdStart, "run": cmdRun, "state": cmdState, "kill": cmdKill,
	"delete": cmdDelete, "exec": cmdExec, "ps": cmdPs, "list": cmdList, "pause": cmdPause,
	"resume": cmdResume, "events": cmdEvents, "update": cmdUpdate, "spec": cmdSpec, "features": cmdFeatures,
	"__supervise": cmdSupervise, "__exec-hold": cmdExecHold,
}

func commandNames() string {
	var names []string
	for n := range commands {
		if !strings.HasPrefix(n, "__") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func newLogger(g globals, stderr io.Writer) (*slog.Logger, func(), error) {
	w, closeFn := stderr, func() {}
	if g.logFile != "" {
		f, err := os.OpenFile(g.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("--log: %w", err)
		}
		w, closeFn = f, func() { f.Close() }
	}
	level := slog.LevelWarn
	if g.debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: runcLevel}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if g.logFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h), closeFn, nil
}

// runcLevel writes levels as runc's logger (logrus) does, in lower case
// with "warning" for warn: go-runc, which containerd's runc shim uses,
// looks for level "error".
func runcLevel(groups []string, a slog.Attr) slog.Attr {
	if a.Key != slog.LevelKey || len(groups) > 0 {
		return a
	}
	l, ok := a.Value.Any().(slog.Level)
	if !ok {
		return a
	}
	name := strings.ToLower(l.String())
	if l == slog.LevelWarn {
		name = "warning"
	}
	return slog.String(slog.LevelKey, name)
}

// StandardEnv is the environment of lodge-runtime (and of the supervisors
// `lodge run` starts): the process's stdio, the config file, this host.
func StandardEnv(version string) Env {
	return Env{
		IO:      IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr},
		Version: Version{Lodge: version, Spec: specs.Version},
		Resolve: func(log *slog.Logger) (*host.Env, error) {
			cfg, err := config.Load()
			if err != nil {
				return nil, err
			}
			return host.Resolve(cfg, log)
		},
	}
}
