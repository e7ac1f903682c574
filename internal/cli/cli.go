package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/config"
)

// Env is what main hands the command line.
type Env struct {
	In       *os.File
	Out, Err io.Writer
	Version  string
	// LoadConfig reads the configuration.
	LoadConfig func() (config.Config, error)
}

// Exit codes, as docker's: 125 when Lodge itself fails a run, 126 when the
// command cannot be run, 127 when it is not found; else the container's.
const (
	ExitLodge        = 125
	ExitNotRunnable  = 126
	ExitNotFound     = 127
	exitGeneralError = 1
)

// exitError carries an exit status out of a command; its message, if
// any, has been printed.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e exitError) Unwrap() error { return e.err }

// Main runs `lodge` and returns the exit status.
func Main(ctx context.Context, args []string, env Env) int {
	if env.In == nil {
		env.In = os.Stdin
	}
	root := newRoot(ctx, &env)
	root.SetArgs(composeArgs(args))
	root.SetOut(env.Out)
	root.SetErr(env.Err)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(env.Err, "lodge: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(env.Err, "lodge: %v\n", err)
	return exitGeneralError
}

// app is what every command gets: the configuration and a logger.
type app struct {
	ctx   func() context.Context
	env   *Env
	debug bool
	cfg   config.Config
	log   *slog.Logger
}

func newRoot(ctx context.Context, env *Env) *cobra.Command {
	a := &app{env: env, ctx: func() context.Context { return ctx }}
	root := &cobra.Command{
		Use:           "lodge",
		Short:         "Lodge: containers, each in its own microVM",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       env.Version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if a.debug {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(env.Err, &slog.HandlerOptions{Level: level}))
			cfg, err := env.LoadConfig()
			if err != nil {
				return err
			}
			a.cfg = cfg
			containersDir = cfg.Images.ContainersDir
			volumesDir = cfg.Images.VolumesDir
			return nil
		},
	}
	root.SetVersionTemplate("lodge version {{.Version}}\n")
	root.PersistentFlags().BoolVar(&a.debug, "debug", false, "debug logging")
	// Commands that keep their own flag parsing.
	passthrough := func(use, short string, run func(args []string) error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, args []string) error { return run(args) }}
	}
	root.AddCommand(
		&cobra.Command{Use: "check", Short: "report whether this host can run Lodge, and how", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return cmdCheck(ctx, a.cfg, a.log, env.Out) }},
		passthrough("setup", "fetch the guest kernel, build the guest initrd and the built-in image",
			func(args []string) error { return cmdSetup(ctx, a.cfg, a.log, args) }),
		passthrough("template", "VM templates sandboxes start from: build|ls|rm|drain",
			func(args []string) error { return cmdTemplate(ctx, a.cfg, a.log, env.Out, args) }),
		&cobra.Command{Use: "version", Short: "print the version", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				fmt.Fprintln(env.Out, "lodge version", env.Version)
				return nil
			}},
	)
	addImageCommands(root, a)
	addRunCommand(root, a)
	addContainerCommands(root, a)
	addAttachCommand(root, a)
	addRestartCommand(root, a)
	addPauseCommands(root, a)
	addVolumeCommands(root)
	addCpCommand(root, a)
	root.AddCommand(portForwardCmd())
	addWatchCommand(root, a)
	addStatsCommand(root, a)
	addEventsCommand(root, a)
	addNetworkCommands(root)
	addSandboxCommands(root, a)
	addUpdateCommand(root, a)
	addCommitCommands(root, a)
	addBuildCommand(root, a)
	addComposeCommands(root, a)
	addPruneCommands(root, a)
	addExportCommands(root, a)
	addContainerGroup(root, a) // last: it names the commands above
	return root
}
