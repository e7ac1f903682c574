// Command lodge-runtime is Lodge's OCI runtime: runc's command line, with
// every container in its own microVM.
package main

import (
	"context"
	"os"

	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/runtimecli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == host.PoolKeeperArg {
		os.Exit(host.PoolKeeperMain(os.Args[2:]))
	}
	os.Exit(runtimecli.Main(context.Background(), os.Args[1:], runtimecli.StandardEnv(version)))
}
