package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/guest/boot"
)

// layersDir holds the mounts of layered roots: <n>/<i> for each layer,
// <n>/rw for the writable image, <n>/root for the overlay. n is a short
// sequence number, not the container id, so that the overlay's mount
// options stay short with many layers.
var layersDir = "/run/lodge/l" // a variable for tests only

var rootSeq atomic.Uint64

// layeredRoot builds a container's root from files in the share: each
// erofs layer image (topmost first) on a read-only loop device, shared
// with every other overlay of the same image file (acquireLayer), the
// writable ext4 image on a read-write one, and overlayfs over them. With
// no writable image the root is read-only: the one layer itself, or a
// read-only overlay of the layers. It returns the root and the mounts it
// made or took, in order (unmountLayered undoes them); on error it has
// undone its own.
func layeredRoot(share string, layers []string, writable string) (root string, mounts []string, err error) {
	if len(layers) == 0 {
		return "", nil, errors.New("a layered root needs layers")
	}
	base := filepath.Join(layersDir, strconv.FormatUint(rootSeq.Add(1), 10))
	defer func() {
		if err != nil {
			releaseMounts(mounts)
			removeLayerDirs(base)
			mounts = nil
		}
	}()
	if err := loadFS(); err != nil {
		return "", nil, err
	}
	var lowers []string
	for i, l := range layers {
		img, err := shareRelative(share, l)
		if err != nil {
			return "", mounts, fmt.Errorf("layer %d: %w", i, err)
		}
		var dir string
		if writable != "" {
			// Lower layers of an overlay are shared by every root that
			// uses the same image file: mounted once, cached once.
			dir, err = acquireLayer(img)
		} else {
			// A root that is one layer itself is the container's own
			// mount, which nothing else may see change.
			dir = filepath.Join(base, strconv.Itoa(i))
			err = mountImage(img, dir, "erofs", "", true)
		}
		if err != nil {
			return "", mounts, fmt.Errorf("layer %d: %w", i, err)
		}
		mounts = append(mounts, dir)
		lowers = append(lowers, dir)
	}
	if writable == "" {
		return readonlyRoot(base, lowers, mounts)
	}
	img, err := shareRelative(share, writable)
	if err != nil {
		return "", mounts, fmt.Errorf("writable layer: %w", err)
	}
	rw := filepath.Join(base, "rw")
	// No prefetch of block bitmaps: ext4 otherwise reads every group's
	// bitmap in its lazyinit thread at mount, each read a 9p request from
	// the loop device; a new container's writable layer needs few of them.
	if err := mountImage(img, rw, "ext4", "no_prefetch_block_bitmaps", false); err != nil {
		return "", mounts, fmt.Errorf("writable layer: %w", err)
	}
	mounts = append(mounts, rw)
	upper, work := filepath.Join(rw, "upper"), filepath.Join(rw, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			return "", mounts, fmt.Errorf("writable layer: %w", err)
		}
	}
	root = filepath.Join(base, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", mounts, err
	}
	data := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(data) >= unix.Getpagesize() {
		return "", mounts, fmt.Errorf("%d layers: overlay options too long", len(layers))
	}
	if err := unix.Mount("overlay", root, "overlay", 0, data); err != nil {
		return "", mounts, fmt.Errorf("mount overlay of %d layers: %w", len(layers), err)
	}
	mounts = append(mounts, root)
	return root, mounts, nil
}

// readonlyRoot is the read-only root of the layers mounted at lowers
// (topmost first): the one layer itself, or an overlay without an upper
// layer, which overlayfs makes read-only.
func readonlyRoot(base string, lowers, mounts []string) (string, []string, error) {
	if len(lowers) == 1 {
		return lowers[0], mounts, nil
	}
	root := filepath.Join(base, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", mounts, err
	}
	data := "lowerdir=" + strings.Join(lowers, ":")
	if len(data) >= unix.Getpagesize() {
		return "", mounts, fmt.Errorf("%d layers: overlay options too long", len(lowers))
	}
	if err := unix.Mount("overlay", root, "overlay", unix.MS_RDONLY, data); err != nil {
		return "", mounts, fmt.Errorf("mount read-only overlay of %d layers: %w", len(lowers), err)
	}
	return root, append(mounts, root), nil
}

// unmountLayered undoes what layeredRoot made. What the container wrote
// reaches its writable layer's image on the host first: the host may end
// the VM right after and keep the image for the container's next run
// (`lodge start` of a stopped container), and a lazy unmount leaves the
// filesystem's flush to whenever its last user lets it go.
func unmountLayered(mounts []string) {
	for _, m := range mounts {
		if !isSharedLayer(m) {
			syncMount(m)
		}
	}
	releaseMounts(mounts)
	for _, m := range mounts {
		if !isSharedLayer(m) {
			removeLayerDirs(filepath.Dir(m))
			return
		}
	}
}

// syncMount writes the dirty data and metadata of the filesystem mounted
// at dir to its device (for a writable layer, its image on the host, over
// the loop device and 9p).
func syncMount(dir string) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	unix.Syncfs(fd)
	unix.Close(fd)
}

// releaseMounts unmounts mounts, last first, releasing shared layers
// instead of unmounting them.
func releaseMounts(mounts []string) {
	for i := len(mounts) - 1; i >= 0; i-- {
		if isSharedLayer(mounts[i]) {
			releaseLayer(mounts[i])
		} else {
			unix.Unmount(mounts[i], unix.MNT_DETACH)
		}
	}
}

// sharedDir holds the layers shared by overlays: s<n>, kept short for the
// overlay's mount options.
func sharedDir() string { return layersDir + "/s" }

// sharedLayers are the erofs layer images mounted for overlays, keyed by
// the image file's identity: a pod's containers of one image (or of
// images with a base layer in common) share each layer's mount and so its
// page cache, and a later container skips the loop device and the mount.
// A layer image never changes (the host converts a layer once, to a new
// file), and a mounted one stays open, so its identity cannot be reused
// while it is here.
var sharedLayers = struct {
	sync.Mutex
	byKey map[layerKey]*sharedLayer
	seq   uint64
}{byKey: map[layerKey]*sharedLayer{}}

type layerKey struct {
	dev, ino    uint64
	size, mtime int64
}

type sharedLayer struct {
	dir  string
	refs int
}

func isSharedLayer(dir string) bool { return strings.HasPrefix(dir, sharedDir()) }

// acquireLayer returns the directory where the erofs image img is
// mounted for overlays, mounting it on first use.
func acquireLayer(img string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(img, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("%s is not a regular file", filepath.Base(img))
	}
	key := layerKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
	sharedLayers.Lock()
	defer sharedLayers.Unlock()
	if l := sharedLayers.byKey[key]; l != nil {
		l.refs++
		return l.dir, nil
	}
	sharedLayers.seq++
	dir := sharedDir() + strconv.FormatUint(sharedLayers.seq, 10)
	if err := mountImage(img, dir, "erofs", "", true); err != nil {
		os.Remove(dir)
		return "", err
	}
	sharedLayers.byKey[key] = &sharedLayer{dir: dir, refs: 1}
	return dir, nil
}

// releaseLayer drops one use of the shared layer at dir and unmounts it
// after the last.
func releaseLayer(dir string) {
	sharedLayers.Lock()
	defer sharedLayers.Unlock()
	for key, l := range sharedLayers.byKey { // a few layers: no index by dir
		if l.dir != dir {
			continue
		}
		if l.refs--; l.refs == 0 {
			delete(sharedLayers.byKey, key)
			unix.Unmount(dir, unix.MNT_DETACH)
			os.Remove(dir)
		}
		return
	}
}

// removeLayerDirs removes a layered root's (unmounted) directories; never
// recursively, so nothing still mounted below is touched.
func removeLayerDirs(base string) {
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		os.Remove(filepath.Join(base, e.Name()))
	}
	os.Remove(base)
}

var loadOnce struct {
	sync.Mutex
	done bool
}

// loadFS loads the modules layered roots need (once; a module built into
// the kernel is fine).
func loadFS() error {
	loadOnce.Lock()
	defer loadOnce.Unlock()
	if loadOnce.done {
		return nil
	}
	for _, m := range []string{"crc32c_generic", "loop", "erofs", "overlay", "ext4"} {
		if err := boot.LoadModule(m); err != nil && !haveModule(m) {
			return fmt.Errorf("load %s: %w", m, err)
		}
	}
	loadOnce.done = true
	return nil
}

func haveModule(m string) bool {
	switch m {
	case "loop":
		_, err := os.Stat("/dev/loop-control")
		return err == nil
	case "crc32c_generic":
		b, _ := os.ReadFile("/proc/crypto")
		return strings.Contains(string(b), ": crc32c\n")
	}
	b, _ := os.ReadFile("/proc/filesystems")
	return strings.Contains(string(b), "\t"+m+"\n")
}

var loopMu sync.Mutex // one free-device search at a time

// mountImage mounts the filesystem image file img at dir through a loop
// device that goes away with the mount (autoclear), with mount options data.
func mountImage(img, dir, fstype, data string, readonly bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mode, flags, mflags := os.O_RDWR, uint32(unix.LO_FLAGS_AUTOCLEAR), uintptr(0)
	if readonly {
		mode, flags, mflags = os.O_RDONLY, flags|unix.LO_FLAGS_READ_ONLY, unix.MS_RDONLY
	}
	backing, err := os.OpenFile(img, mode|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer backing.Close()
	loop, err := attachLoop(backing, flags)
	if err != nil {
		return fmt.Errorf("loop device for %s: %w", filepath.Base(img), err)
	}
	// The loop device stays while it is open or mounted: close it only
	// after the mount holds it.
	defer loop.Close()
	if err := unix.Mount(loop.Name(), dir, fstype, mflags, data); err != nil {
		return fmt.Errorf("mount %s (%s): %w", filepath.Base(img), fstype, err)
	}
	return nil
}

func attachLoop(backing *os.File, flags uint32) (*os.File, error) {
	loopMu.Lock()
	defer loopMu.Unlock()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for range 8 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := os.OpenFile("/dev/loop"+strconv.Itoa(n), os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = flags
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, err
		}
	}
	return nil, errors.New("no free loop device")
}
