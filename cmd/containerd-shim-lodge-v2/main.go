// Command containerd-shim-lodge-v2 is Lodge's containerd shim (runtime type
// io.containerd.lodge.v2): one shim process and one microVM per pod.
package main

import "github.com/lodgeruntime/lodge/internal/ctrshim"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctrshim.Version = version
	ctrshim.Main()
}
