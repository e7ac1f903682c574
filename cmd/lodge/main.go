// Command lodge is Lodge's standalone tool for people.
package main

import (
	"context"
	"os"

	"github.com/lodgeruntime/lodge/internal/cli"
	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/runtimecli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx := context.Background()
	if len(os.Args) > 1 && os.Args[1] == host.PoolKeeperArg {
		os.Exit(host.PoolKeeperMain(os.Args[2:]))
	}
	// `lodge run` starts each container's supervisor as this executable
	// (lodge-runtime's, built in).
	if runtimecli.Supervises(os.Args[1:]) {
		os.Exit(runtimecli.Main(ctx, os.Args[1:], runtimecli.StandardEnv(version)))
	}
	os.Exit(cli.Main(ctx, os.Args[1:], cli.Env{
		In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Version: version, LoadConfig: config.Load,
	}))
}
