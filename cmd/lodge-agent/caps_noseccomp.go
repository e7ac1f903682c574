//go:build !seccomp

package main

var capabilities = []string{"cgroup2"}
