// Package seccompbpf holds compiled seccomp filters (Program) and their
// capture: a helper compiles a profile with libcontainer and libseccomp,
// and the capturing process takes the program from the helper's load of
// it instead of letting the kernel confine the helper (Capture). The guest
// agent captures in its guest; the host captures natively, with the same
// helper binary (the agent's), and hands the program to the agent, which
// then compiles nothing (docs/architecture.md, "Seccomp profiles").
package seccompbpf
