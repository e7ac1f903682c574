// Package hostmount reads the host's mount table: mount points below a
// directory, and undoing the mounts a Lodge process left behind.
package hostmount

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// UnmountBelow detaches every mount at or below dir, deepest first. It never
// follows a symlink at a mount point: a path that a guest replaced with one
// is left alone rather than resolved to somewhere else on the host.
func UnmountBelow(dir string) error {
	points, err := PointsBelow(dir, true)
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	}
	return err
}

// PointsBelow lists the mount points below dir (and dir itself if self),
// in mount table order.
func PointsBelow(dir string, self bool) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if (self && mp == dir) || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	return points, sc.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (s[i+1]-'0')*64 + (s[i+2]-'0')*8 + (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
