package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	apitypes "github.com/containerd/containerd/api/types"
	"golang.org/x/sys/unix"
)

// mountFlags are mount options that are flags, not filesystem data.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"noatime": {false, unix.MS_NOATIME}, "relatime": {false, unix.MS_RELATIME},
	"sync": {false, unix.MS_SYNCHRONOUS}, "dirsync": {false, unix.MS_DIRSYNC},
}

// parseMountOptions splits options into flags and filesystem data.
func parseMountOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// mountRootfs mounts the snapshot containerd passes (usually one overlay
// mount) on bundle/rootfs. The returned undo unmounts it.
func mountRootfs(mounts []*apitypes.Mount, bundle string) (func(), error) {
	if len(mounts) == 0 {
		return func() {}, nil
	}
	target := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(target, 0o711); err != nil {
		return nil, err
	}
	var done []string
	undo := func() {
		for i := len(done) - 1; i >= 0; i-- {
			unix.Unmount(done[i], unix.MNT_DETACH)
		}
	}
	for _, m := range mounts {
		flags, data := parseMountOptions(m.Options)
		if len(data) > unix.Getpagesize()-512 {
			undo()
			return nil, fmt.Errorf("%w: mount options of %s too long", ErrInvalid, m.Type)
		}
		if err := unix.Mount(m.Source, target, m.Type, flags, data); err != nil {
			undo()
			return nil, fmt.Errorf("mount rootfs (%s %s): %w", m.Type, m.Source, err)
		}
		done = append(done, target)
	}
	return undo, nil
}

// writableImage is the file in a bundle that holds a layered root's
// writable layer.
const writableImage = "lodge-rw.img"

// overlayLowers reads the layers of a snapshot containerd passes as one
// overlay mount (its overlay snapshotter's active snapshot: lowerdir= the
// committed parents, topmost first, plus an upper and work directory that
// a layered root does not use). A snapshot without parents comes as a
// bind mount: false, as for anything else.
func overlayLowers(mounts []*apitypes.Mount) ([]string, bool) {
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		return nil, false
	}
	var lower []string
	for _, o := range mounts[0].Options {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			lower = strings.Split(v, ":")
		}
	}
	for _, d := range lower {
		if !filepath.IsAbs(d) {
			return nil, false
		}
	}
	return lower, len(lower) > 0
}
