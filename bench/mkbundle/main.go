// Command mkbundle writes an OCI bundle for the benchmarks: a busybox
// rootfs and a config.json that runs the given command (no terminal).
//
//	go run ./bench/mkbundle DIR CMD [ARG...]
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lodgeruntime/lodge/internal/testbundle"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: mkbundle DIR CMD [ARG...]")
		os.Exit(2)
	}
	dir := os.Args[1]
	if err := testbundle.Rootfs(filepath.Join(dir, "rootfs")); err != nil {
		fmt.Fprintln(os.Stderr, "mkbundle:", err)
		os.Exit(1)
	}
	if err := testbundle.WriteSpec(dir, testbundle.Spec(os.Args[2:]...)); err != nil {
		fmt.Fprintln(os.Stderr, "mkbundle:", err)
		os.Exit(1)
	}
}
