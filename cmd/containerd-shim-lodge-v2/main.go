// Command containerd-shim-lodge-v2 is Lodge's containerd shim (runtime type
// io.containerd.lodge.v2): one shim process and one microVM per pod.
package main

import (
	"os"

	"github.com/lodgeruntime/lodge/internal/ctrshim"
	"github.com/lodgeruntime/lodge/internal/host"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == host.PoolKeeperArg {
		os.Exit(host.PoolKeeperMain(os.Args[2:]))
	}
	ctrshim.Version = version
	ctrshim.Main()
}
