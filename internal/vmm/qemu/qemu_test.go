package qemu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/uidlease"
	"github.com/lodgeruntime/lodge/internal/vmm"
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
	cfg.StateDir, cfg.Shares9P = state, nil
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

// TestKVMDeviceIsQEMUsOwn: a QEMU of a user of its own opens /dev/kvm for
// reading and writing whatever the host's node's group and mode (root's
// alone, 0600, on hosts without udev's kvm group): its jail has a node of
// its own, owned by its user. Before, it took the node's group, and where
// that was root's, every KVM guest failed with "Could not access KVM
// kernel module: Permission denied" and the host fell back to TCG. (Here
// a stand-in for QEMU reports what it could open.)
func TestKVMDeviceIsQEMUsOwn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm on this host")
	}
	// A cold boot's QEMU, and a clone's, which serves 9p from a user
	// namespace of its own.
	for _, userns := range []bool{false, true} {
		t.Run(fmt.Sprintf("userns=%v", userns), func(t *testing.T) {
			dir := t.TempDir()
			fake := filepath.Join(dir, "qemu")
			os.WriteFile(fake, []byte("#!/bin/sh\nif exec 3<>/dev/kvm; then echo \"opened /dev/kvm as uid $(id -u)\" >&2; "+
				"else echo 'cannot open /dev/kvm' >&2; fi\nexit 1\n"), 0o755)
			state := filepath.Join(dir, "state")
			os.Mkdir(state, 0o700)
			cfg := baseConfig()
			cfg.StateDir, cfg.Shares9P, cfg.Accel = state, nil, vmm.AccelKVM
			cfg.Kernel, cfg.Initrd = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
			for _, f := range []string{cfg.Kernel, cfg.Initrd} {
				os.WriteFile(f, nil, 0o644) // readable by all, as the jail asks
			}
			want := "opened /dev/kvm as uid 19000000" // the range below
			if userns {
				share := filepath.Join(dir, "share")
				os.Mkdir(share, 0o755)
				cfg.Shares9P = []vmm.Share9P{{Tag: "vol", Path: share}}
				want = "opened /dev/kvm as uid 1900000000" // the first id, as its namespace names it
			}
			users := &uidlease.Pool{Dir: filepath.Join(dir, "uids"), First: 1900000000, Count: 64}
			d := &Driver{Binary: fake, Host: Host{TSCkHz: 1}, Users: users, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			vm, err := d.Start(context.Background(), cfg)
			if err == nil {
				vm.Shutdown(context.Background())
				t.Fatal("Start succeeded with a QEMU that exited")
			}
			if !strings.Contains(err.Error(), want) || userns && !strings.HasSuffix(err.Error(), want) {
				t.Errorf("QEMU of a user of its own could not open /dev/kvm (host node: %s): %v", kvmNode(), err)
			}
		})
	}
}

func kvmNode() string {
	st, err := os.Stat("/dev/kvm")
	if err != nil {
		return err.Error()
	}
	s := st.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("uid %d gid %d mode %v", s.Uid, s.Gid, st.Mode().Perm())
}
