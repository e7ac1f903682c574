package filelock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// Shared locks are held together; an exclusive one waits for them all,
// and a shared one for an exclusive one.
func TestSharedAndExclusive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	ctx := context.Background()
	a, err := SharedFile(ctx, p, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := SharedFile(ctx, p, false)
	if err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	if _, err := LockFile(ctx, p, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("an exclusive lock while shared ones are held: %v", err)
	}
	a.Close()
	b.Close()
	x, err := LockFile(ctx, p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := SharedFile(ctx, p, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("a shared lock while an exclusive one is held: %v", err)
	}
}
