// Package runtimecli is lodge-runtime, the OCI runtime command line in
// runc's grammar:
//
//	lodge-runtime [global options] command [command options] [arguments...]
//
// Each container runs in its own microVM (a sandbox). Today `run` owns its
// sandbox in-process for the life of the container; the create/start split
// moves that ownership to a detached supervisor (issue 3).
package runtimecli
