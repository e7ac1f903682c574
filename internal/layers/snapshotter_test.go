package layers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A layer of containerd's erofs snapshotter (its layer.erofs mounted where
// the overlay's lowerdir points, here through a loop device as on this
// kernel) gives its image, also seen through a bind mount; a plain
// directory does not, nor a mount whose image file was removed.
func TestSnapshotterImage(t *testing.T) {
	needRoot(t)
	fss, _ := os.ReadFile("/proc/filesystems")
	if !strings.Contains(string(fss), "\terofs\n") {
		t.Skip("host kernel has no erofs")
	}
	img, _, err := (&Store{Dir: t.TempDir()}).FromDir(context.Background(), layerDir(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	mounted := func(blob string) string {
		t.Helper()
		if err := os.WriteFile(blob, b, 0o444); err != nil {
			t.Fatal(err)
		}
		at := t.TempDir()
		if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", blob, at).CombinedOutput(); err != nil {
			t.Skipf("cannot loop-mount erofs here: %v: %s", err, out)
		}
		t.Cleanup(func() { unix.Unmount(at, unix.MNT_DETACH) })
		return at
	}
	// Where containerd 2.4's mount manager mounts it: not beside the file.
	blob := filepath.Join(t.TempDir(), "layer.erofs")
	at := mounted(blob)
	if got := SnapshotterImage(at); got != blob {
		t.Errorf("an erofs snapshotter layer: %q, want %q", got, blob)
	}
	bind := t.TempDir()
	if err := unix.Mount(at, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(bind, unix.MNT_DETACH) })
	if got := SnapshotterImage(bind); got != blob {
		t.Errorf("the layer through a bind mount: %q, want %q", got, blob)
	}
	if got := SnapshotterImage(t.TempDir()); got != "" {
		t.Errorf("a plain directory: %q", got)
	}
	gone := filepath.Join(t.TempDir(), "layer.erofs")
	goneAt := mounted(gone)
	os.Remove(gone)
	if got := SnapshotterImage(goneAt); got != "" {
		t.Errorf("a layer whose image file was removed: %q", got)
	}
}
