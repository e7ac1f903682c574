//go:build !seccomp

package agent

// withSeccomp: this test binary has libcontainer's seccomp (the agent's
// build tags, `make unit`'s second run).
const withSeccomp = false
