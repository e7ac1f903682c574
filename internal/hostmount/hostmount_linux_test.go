package hostmount

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// At names the type and source of the mount at a directory (the topmost
// one there), and nothing for a directory that is no mount point;
// PointsBelow finds it below its parent.
func TestAtAndPointsBelow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "with space")
	os.Mkdir(dir, 0o755)
	for _, src := range []string{"lodgetest-first", "lodgetest-second"} {
		if err := unix.Mount(src, dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	}
	if fstype, src, err := At(dir); err != nil || fstype != "tmpfs" || src != "lodgetest-second" {
		t.Errorf("At(%s) = %q, %q, %v; want tmpfs, lodgetest-second", dir, fstype, src, err)
	}
	if fstype, src, err := At(parent); err != nil || fstype != "" || src != "" {
		t.Errorf("At of a plain directory = %q, %q, %v", fstype, src, err)
	}
	if points, err := PointsBelow(parent, false); err != nil || !slices.Contains(points, dir) {
		t.Errorf("PointsBelow(%s) = %v, %v; want %s in it", parent, points, err, dir)
	}
}
