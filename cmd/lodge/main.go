// Command lodge is Lodge's standalone tool for people.
package main

import (
	"context"
	"os"

	"github.com/lodgeruntime/lodge/internal/cli"
	"github.com/lodgeruntime/lodge/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.Env{
		Out: os.Stdout, Err: os.Stderr, Version: version, LoadConfig: config.Load,
	}))
}
