// Package ctrshim is containerd's front end to Lodge: the
// containerd-shim-lodge-v2 binary. It is built on containerd's shim library
// (runtime/v2/shim of containerd 1.7, which containerd 1.6 and 2.x both
// drive through task API v2) and serves internal/shim's task service, the
// same one the OCI command line's supervisor serves.
//
// One shim process serves one sandbox: a Kubernetes pod (its containers are
// grouped by the CRI sandbox-id annotation) or a lone container. The VM
// boots with the first container (the pod's sandbox container), and the
// shim exits when the last one is deleted.
package ctrshim
