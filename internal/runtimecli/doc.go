// Package runtimecli is lodge-runtime, the OCI runtime command line in
// runc's grammar:
//
//	lodge-runtime [global options] command [command options] [arguments...]
//
// Each container runs in its own microVM (a sandbox). `create` starts a
// detached supervisor (`lodge-runtime __supervise`) that owns the sandbox
// for the life of the container and serves containerd's task API on
// <root>/<id>/task.sock; the other commands are clients of it, and `run`
// is create + start + wait. state.json in <root>/<id> is the record that
// `state` and `list` read. docs/architecture.md ("lodge-runtime: the
// per-container supervisor") has the whole picture.
//
// As runc, every error a command reports goes to stderr and, with --log,
// to the log file in runc's format (--log-format text or json, level
// "error"), where containerd's runc shim reads it to tell the user (and
// Docker) what went wrong. Socket paths of any length work (unixsock).
package runtimecli
