package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	// Test only: the host's writer makes the images the guest mounts, and
	// the host's mount table reader lists what the guest would have.
	"github.com/lodgeruntime/lodge/internal/hostmount"
	"github.com/lodgeruntime/lodge/internal/layers"
)

// sharedMounts lists the mount points of shared layers.
func sharedMounts(t *testing.T) []string {
	t.Helper()
	points, err := hostmount.PointsBelow(layersDir, false)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range points {
		if isSharedLayer(p) {
			out = append(out, p)
		}
	}
	return out
}

// Roots of one layer image share its mount: the second root finds it
// mounted, a root's removal leaves it to the others, a root made after
// that still reads the image, and the last removal unmounts it. A root
// that is the layer alone keeps a mount of its own.
func TestRootsShareLayerMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	fss, _ := os.ReadFile("/proc/filesystems")
	for _, fs := range []string{"erofs", "overlay", "ext4"} {
		if !strings.Contains(string(fss), "\t"+fs+"\n") {
			t.Skipf("host kernel has no %s", fs)
		}
	}
	old := layersDir
	layersDir = filepath.Join(t.TempDir(), "l")
	t.Cleanup(func() { layersDir = old })

	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "hello"), []byte("from the image\n"), 0o644)
	store := &layers.Store{Dir: t.TempDir()}
	img, _, err := store.FromDir(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	// The host attaches the same image file under each container's path.
	share := t.TempDir()
	// root builds a root of the image for container id; its release runs
	// once, when called or when the test ends.
	root := func(id string) (string, []string, func()) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(share, id), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(img, filepath.Join(share, id, "layer0")); err != nil {
			t.Fatal(err)
		}
		if err := store.NewWritable(context.Background(), filepath.Join(share, id, "rw.img"), 64<<20); err != nil {
			t.Fatal(err)
		}
		r, mounts, err := layeredRoot(share, []string{id + "/layer0"}, id+"/rw.img")
		if err != nil && strings.Contains(err.Error(), "loop device") {
			t.Skipf("no loop devices here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		release := func() { once.Do(func() { unmountLayered(mounts) }) }
		t.Cleanup(release)
		return r, mounts, release
	}
	read := func(r string) string {
		b, _ := os.ReadFile(filepath.Join(r, "hello"))
		return string(b)
	}

	rootA, mountsA, releaseA := root("a")
	rootB, mountsB, releaseB := root("b")
	if mountsA[0] != mountsB[0] || !isSharedLayer(mountsA[0]) {
		t.Fatalf("two roots of one image do not share its layer: %v and %v", mountsA, mountsB)
	}
	if got := sharedMounts(t); len(got) != 1 {
		t.Fatalf("shared layer mounts: %v, want one", got)
	}
	if err := os.WriteFile(filepath.Join(rootA, "written"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(rootB, "written")); !os.IsNotExist(err) {
		t.Errorf("a write in one root shows in the other: %v", err)
	}
	releaseA()
	if got := read(rootB); got != "from the image\n" {
		t.Errorf("after the first root went, the second reads %q", got)
	}
	rootC, mountsC, releaseC := root("c")
	if got := read(rootC); got != "from the image\n" || mountsC[0] != mountsB[0] {
		t.Errorf("a root made after one went: reads %q, layer %s (want %s)", got, mountsC[0], mountsB[0])
	}
	releaseB()
	releaseC()
	if got := sharedMounts(t); len(got) != 0 {
		t.Errorf("shared layers still mounted after their last root: %v", got)
	}
	if ents, _ := os.ReadDir(layersDir); len(ents) != 0 {
		t.Errorf("left in the layers directory: %v", ents)
	}

	// A root that is the layer alone (a pod holder's) is its own mount.
	ro, roMounts, err := layeredRoot(share, []string{"a/layer0"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if isSharedLayer(ro) || len(sharedMounts(t)) != 0 || read(ro) != "from the image\n" {
		t.Errorf("a read-only root of one layer: %s (shared mounts %v)", ro, sharedMounts(t))
	}
	unmountLayered(roMounts)
}
