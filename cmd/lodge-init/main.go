// Command lodge-init is a direct container's first step in a Lodge guest
// (internal/guest/directinit): the agent starts it in the container's
// namespaces and cgroup; it sets the container up and executes its
// program. It is small, so that it starts much sooner than the agent's
// binary would under emulation.
package main

import (
	"os"

	"github.com/lodgeruntime/lodge/internal/guest/directinit"
)

func main() {
	directinit.Main() // returns only on error, which it reported
	os.Exit(127)
}
