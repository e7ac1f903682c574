package layers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/hostmount"
)

// loopMajor is the block major of loop devices.
const loopMajor = 7

// SnapshotterImage returns the erofs image file mounted at dir when dir,
// an overlay lowerdir containerd passes, is such a mount: containerd's
// erofs snapshotter (containerd 2.x) keeps each committed layer as an
// erofs image (<snapshot>/layer.erofs) and mounts it, through a loop
// device (or, on kernels that have them, a file-backed mount), where the
// overlay's lowerdir points. That image is used as it is rather than
// converted again: containerd made it once, keeps it immutable
// (FS_IMMUTABLE_FL) and writes it in overlayfs form (mkfs.erofs --aufs).
// Anything else (a directory of the overlay snapshotter, an erofs mount
// whose file is gone or is no erofs image): "".
func SnapshotterImage(dir string) string {
	var sfs unix.Statfs_t
	if unix.Statfs(dir, &sfs) != nil || uint32(sfs.Type) != erofsMagic { // f_type is the superblock magic
		return ""
	}
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return ""
	}
	var img string
	if unix.Major(st.Dev) == loopMajor {
		b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", loopMajor, unix.Minor(st.Dev)))
		if err != nil {
			return ""
		}
		img = strings.TrimSuffix(string(b), "\n")
	} else if fstype, src, _ := hostmount.At(dir); fstype == "erofs" {
		img = src // a file-backed mount: its source is the image
	}
	if !filepath.IsAbs(img) || !isErofsImage(img) {
		return "" // also a deleted backing file: "... (deleted)"
	}
	return img
}

// isErofsImage says whether path is a regular file (not a link to one)
// that starts like an erofs image.
func isErofsImage(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return false
	}
	_, err = erofsSuperblock(f)
	return err == nil
}
