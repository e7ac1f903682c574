package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/lodgeruntime/lodge/internal/config"
)

// Env is what main hands the command line.
type Env struct {
	Out, Err io.Writer
	Version  string
	// LoadConfig reads the configuration.
	LoadConfig func() (config.Config, error)
}

// Main runs `lodge` and returns the exit status.
func Main(ctx context.Context, args []string, env Env) int {
	if err := dispatch(ctx, args, env); err != nil {
		fmt.Fprintf(env.Err, "lodge: %v\n", err)
		return 1
	}
	return 0
}

const usage = `usage: lodge [--debug] <command>

commands:
  check    report whether this host can run Lodge, and how
  setup    fetch the guest kernel and build the guest initrd
  template build|ls|rm   VM templates sandboxes start from (see README)
  version  print the version`

func dispatch(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("lodge", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	debug := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w\n%s", err, usage)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(env.Err, &slog.HandlerOptions{Level: level}))
	if fs.NArg() == 0 {
		return errors.New(usage)
	}
	cfg, err := env.LoadConfig()
	if err != nil {
		return err
	}
	rest := fs.Args()[1:]
	switch fs.Arg(0) {
	case "check":
		return cmdCheck(ctx, cfg, log, env.Out)
	case "setup":
		return cmdSetup(ctx, cfg, log, rest)
	case "template":
		return cmdTemplate(ctx, cfg, log, env.Out, rest)
	case "version":
		fmt.Fprintln(env.Out, "lodge version", env.Version)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", fs.Arg(0), usage)
}
