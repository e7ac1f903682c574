package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestShimCRIErofsSnapshotter: containerd 2.x's erofs snapshotter keeps
// each image layer as an erofs image; a pod's containers get their roots
// from those images as they are (Lodge converts nothing into its own layer
// store), share each layer's mount in the guest, and keep their writes to
// themselves: containerd's images are not changed.
func TestShimCRIErofsSnapshotter(t *testing.T) {
	needCrictl(t)
	c := startContainerd2Erofs(t)
	ref := "lodge.test/busybox-data:1"
	c.importImage(pauseRef, "sleep", "2147483647")
	c.importImageWith(ref, func(rootfs string) {
		os.MkdirAll(filepath.Join(rootfs, "data"), 0o755)
		os.WriteFile(filepath.Join(rootfs, "data", "hello.txt"), []byte("from-an-erofs-layer\n"), 0o644)
	})
	blobs, _ := filepath.Glob(filepath.Join(c.dir, "root", "io.containerd.snapshotter.v1.erofs", "snapshots", "*", "layer.erofs"))
	if len(blobs) != 2 {
		t.Fatalf("want the two images' layers unpacked as erofs images by containerd's snapshotter, found %v", blobs)
	}
	sums := map[string][32]byte{}
	for _, b := range blobs {
		sums[b] = fileSum(t, b)
	}

	podCfg := writeJSON(t, map[string]any{
		"metadata":      map[string]any{"name": "erofs", "namespace": "lodge", "uid": "uid-erofs", "attempt": 1},
		"log_directory": t.TempDir(),
	})
	pod, err := c.crictl("runp", "--runtime", "lodge", podCfg)
	if err != nil {
		t.Fatalf("runp: %v", err)
	}
	var ids []string
	for _, name := range []string{"one", "two"} {
		ids = append(ids, c.startContainer(pod, podCfg, map[string]any{
			"metadata": map[string]any{"name": name}, "image": map[string]any{"image": ref},
			"command": []string{"sleep", "3600"}, "log_path": name + ".log", "linux": map[string]any{},
		}))
	}
	for _, id := range ids {
		if out, err := c.crictl("exec", id, "cat", "/data/hello.txt"); err != nil || out != "from-an-erofs-layer" {
			t.Errorf("the image's file in %s: %v: %q", id, err, out)
		}
	}
	if l1, l2 := c.rootLower(ids[0]), c.rootLower(ids[1]); !strings.HasPrefix(l1, "lowerdir=/run/lodge/l/") || l1 != l2 {
		t.Errorf("the two containers' roots do not share the layer's mount in the guest: %q, %q", l1, l2)
	}
	// Every root (the pod's and both containers') was made of
	// containerd's images, and none was converted again.
	log, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	roots := regexp.MustCompile(`root from layers.*?layers=(\d+) converted=(\d+) from_snapshotter=(\d+)`).FindAllStringSubmatch(string(log), -1)
	if len(roots) != 3 {
		t.Errorf("want 3 roots from layers in containerd's log (the pod's and two containers'), found %d", len(roots))
	}
	for _, r := range roots {
		if r[2] != "0" || r[3] != r[1] {
			t.Errorf("a root not made of the snapshotter's images as they are: %s", r[0])
		}
	}
	if imgs := c.layerImages(); len(imgs) != 0 {
		t.Errorf("layers converted into Lodge's layer store although containerd's snapshotter made them: %v", imgs)
	}
	// A write in one container is not seen by the other, nor does it reach
	// containerd's images.
	if out, err := c.crictl("exec", ids[0], "sh", "-c", "echo changed > /data/hello.txt && cat /data/hello.txt"); err != nil || out != "changed" {
		t.Errorf("write in %s: %v: %q", ids[0], err, out)
	}
	if out, err := c.crictl("exec", ids[1], "cat", "/data/hello.txt"); err != nil || out != "from-an-erofs-layer" {
		t.Errorf("the other container sees the write: %v: %q", err, out)
	}
	for b, sum := range sums {
		if got := fileSum(t, b); got != sum {
			t.Errorf("containerd's layer image %s changed", b)
		}
	}
	c.removePod(pod)
}
