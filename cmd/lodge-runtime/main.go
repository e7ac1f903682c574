// Command lodge-runtime is Lodge's OCI runtime: runc's command line, with
// every container in its own microVM.
package main

import (
	"context"
	"log/slog"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/runtimecli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(runtimecli.Main(context.Background(), os.Args[1:], runtimecli.Env{
		IO:      runtimecli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr},
		Version: runtimecli.Version{Lodge: version, Spec: specs.Version},
		Resolve: func(log *slog.Logger) (*host.Env, error) {
			cfg, err := config.Load()
			if err != nil {
				return nil, err
			}
			return host.Resolve(cfg, log)
		},
	}))
}
