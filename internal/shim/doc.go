// Package shim translates containerd's task API (runtime/task/v2) to the
// sandbox: one implementation behind two front ends. lodge-runtime's
// per-container supervisor serves it to later CLI calls, and the containerd
// shim (containerd-shim-lodge-v2) serves it to containerd. Errors become
// wire codes here and nowhere else.
package shim
