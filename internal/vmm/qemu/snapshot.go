package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lodgeruntime/lodge/internal/vmm"
)

// Templates and clones (see docs/architecture.md, "Templates and clones"):
//
//	template VM (RAM: memory-backend-file, share=on)   clone VM (same file, share=off, -incoming defer)
//	  migrate-set-capabilities x-ignore-shared            migrate-set-capabilities x-ignore-shared
//	  stop                                                getfd "state" (SCM_RIGHTS)
//	  getfd "state" (SCM_RIGHTS)                          migrate-incoming fd:state
//	  migrate fd:state  -> device state only (~100 KB)    query-migrate until completed
//	  query-migrate until completed                       cont
//	  quit (never resumed: the file is the RAM)
//
// The state travels through a descriptor, not "exec:cat > FILE": QEMU's
// seccomp sandbox (spawn=deny) kills a QEMU that forks a shell.

var (
	_ vmm.Snapshotter = (*vm)(nil)
	_ vmm.Restorer    = (*vm)(nil)
)

// ErrMigration reports a save or restore that QEMU did not complete.
var ErrMigration = errors.New("qemu migration failed")

const migrationFD = "lodge-state"

var ignoreShared = map[string]any{"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}}}

// Snapshot stops the VM for good and writes its device state to w.
func (v *vm) Snapshot(ctx context.Context, w *os.File) error {
	if !v.cfg.Memory.Shared || v.cfg.Memory.File == "" {
		return fmt.Errorf("qemu: snapshot of %s: its RAM is not in a shared file", v.cfg.ID)
	}
	q := v.qmp
	for _, step := range []func() error{
		func() error { return q.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil) },
		func() error { return q.Execute(ctx, "stop", nil, nil) },
		func() error { return q.PassFD(ctx, migrationFD, w) },
		func() error { return q.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + migrationFD}, nil) },
		func() error { return v.waitMigration(ctx) },
	} {
		if err := step(); err != nil {
			return fmt.Errorf("qemu: snapshot of %s: %w", v.cfg.ID, err)
		}
	}
	return nil
}

// Restore loads the device state from r into a VM started with
// Config.Incoming and resumes it.
func (v *vm) Restore(ctx context.Context, r *os.File) error {
	if !v.cfg.Incoming {
		return fmt.Errorf("qemu: restore of %s: not started to receive a state", v.cfg.ID)
	}
	q := v.qmp
	start := time.Now()
	for _, step := range []func() error{
		func() error { return q.Execute(ctx, "migrate-set-capabilities", ignoreShared, nil) },
		func() error { return q.PassFD(ctx, migrationFD, r) },
		func() error {
			return q.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:" + migrationFD}, nil)
		},
		func() error { return v.waitMigration(ctx) },
		func() error { return q.Execute(ctx, "cont", nil, nil) },
	} {
		if err := step(); err != nil {
			return v.exitError("restore", err)
		}
	}
	v.log.Debug("qemu state loaded, guest running", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitMigration polls query-migrate until the migration completed, failed
// or ctx ended.
func (v *vm) waitMigration(ctx context.Context) error {
	for {
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := v.qmp.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("%w: %s %s", ErrMigration, st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w (status %q)", ErrMigration, ctx.Err(), st.Status)
		case <-v.done:
			return fmt.Errorf("%w: %w", ErrMigration, vmm.ErrExited)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
