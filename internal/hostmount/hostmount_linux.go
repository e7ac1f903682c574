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
	dir = filepath.Clean(dir)
	var points []string
	err := eachMount(func(mp, _, _ string) {
		if (self && mp == dir) || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	})
	return points, err
}

// At returns the file system type and source of the mount at dir, the
// last one there (the one seen), or "" and "" when dir is no mount point.
func At(dir string) (fstype, source string, err error) {
	dir = filepath.Clean(dir)
	err = eachMount(func(mp, t, src string) {
		if mp == dir {
			fstype, source = t, src
		}
	})
	return fstype, source, err
}

// eachMount calls fn with the mount point, file system type and source of
// each mount in this process's mount table, in order.
func eachMount(fn func(point, fstype, source string)) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - type source super-options
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 {
			continue
		}
		var fstype, source string
		if len(tail) > 1 {
			fstype, source = tail[0], unescapeMount(tail[1])
		}
		fn(unescapeMount(fields[4]), fstype, source)
	}
	return sc.Err()
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
