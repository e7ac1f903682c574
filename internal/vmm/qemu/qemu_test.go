package qemu

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartReportsDeadQEMU: a QEMU that exits at once (here a stand-in
// that prints an error and exits) must make Start fail promptly with its
// words, and leave no sockets behind.
func TestStartReportsDeadQEMU(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu")
	os.WriteFile(fake, []byte("#!/bin/sh\necho 'qemu-system-x86_64: -kernel: could not open kernel' >&2\nexit 1\n"), 0o755)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)
	cfg := baseConfig()
	cfg.StateDir, cfg.Shares = state, nil
	d := &Driver{Binary: fake, Host: Host{TSCkHz: 1}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	vm, err := d.Start(ctx, cfg)
	if err == nil {
		vm.Shutdown(ctx)
		t.Fatal("Start succeeded with a QEMU that exited")
	}
	if !strings.Contains(err.Error(), "could not open kernel") {
		t.Errorf("error does not carry QEMU's words: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %s to notice QEMU had exited", d)
	}
	for _, s := range []string{QMPSocket, AgentSocket} {
		if _, err := os.Stat(filepath.Join(state, s)); err == nil {
			t.Errorf("%s left behind", s)
		}
	}
}
