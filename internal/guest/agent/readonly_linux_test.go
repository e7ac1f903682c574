package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A read-only path that is a device node or FIFO in a 9p root becomes a read-only
// bind of that node (no statfs, which 9p cannot answer for it); anything
// else stays a read-only path, and a symlink in the root never makes a
// bind of a file outside it.
func TestReadonlyNodesAsBinds(t *testing.T) {
	rootfs := t.TempDir()
	if err := unix.Mknod(filepath.Join(rootfs, "node"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("mknod: %v (needs CAP_MKNOD)", err)
	}
	if err := unix.Mkfifo(filepath.Join(rootfs, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(rootfs, "file"), nil, 0o644)
	os.Symlink("/dev/null", filepath.Join(rootfs, "escape"))
	spec := &specs.Spec{Linux: &specs.Linux{ReadonlyPaths: []string{"/node", "/file", "/fifo", "/escape", "/missing"}}}
	if err := readonlyNodesAsBinds(spec, rootfs); err != nil {
		t.Fatal(err)
	}
	if want := []string{"/file", "/escape", "/missing"}; !slices.Equal(spec.Linux.ReadonlyPaths, want) {
		t.Errorf("read-only paths %v, want %v", spec.Linux.ReadonlyPaths, want)
	}
	if len(spec.Mounts) != 2 || spec.Mounts[1].Destination != "/fifo" {
		t.Fatalf("mounts %+v, want binds of /node and /fifo", spec.Mounts)
	}
	m := spec.Mounts[0]
	if m.Destination != "/node" || m.Source != filepath.Join(rootfs, "node") || m.Type != "bind" ||
		!slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "nodev") {
		t.Errorf("mount %+v, want a read-only nodev bind of the root's node", m)
	}
}
