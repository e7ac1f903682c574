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

// TestStartWithoutShareDaemon: the driver connects each share's socket
// before QEMU starts (QEMU gets the connected socket); a share whose
// daemon is not listening fails Start with the share named, before any
// QEMU runs, and leaves no sockets behind.
func TestStartWithoutShareDaemon(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	fake := filepath.Join(dir, "qemu")
	os.WriteFile(fake, []byte("#!/bin/sh\ntouch "+ran+"\nsleep 30\n"), 0o755)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o700)
	cfg := baseConfig()
	cfg.StateDir = state
	cfg.Shares[0].Socket = filepath.Join(state, "virtiofsd.sock")
	d := &Driver{Binary: fake, Host: Host{TSCkHz: 1}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	vm, err := d.Start(context.Background(), cfg)
	if err == nil {
		vm.Shutdown(context.Background())
		t.Fatal("Start succeeded without a share daemon")
	}
	if !strings.Contains(err.Error(), cfg.Shares[0].Tag) || !strings.Contains(err.Error(), "virtiofsd.sock") {
		t.Errorf("error does not name the share and its socket: %v", err)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("QEMU was started")
	}
	if left, _ := os.ReadDir(state); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
