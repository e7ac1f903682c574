package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// resolveUser turns user[:group] into ids as docker does, from the
// image's /etc/passwd and /etc/group (what the container sees at its
// start): a name must be listed; a number stands for itself, and when
// /etc/passwd lists it, its entry gives the primary group. Without a
// group, the user also has the groups that list it as a member.
func resolveUser(spec string, lays []string) (specs.User, error) {
	var out specs.User
	files, err := imagefs.Open(lays)
	if err != nil {
		return out, err
	}
	defer files.Close()
	passwd, err := userDB(files, "/etc/passwd")
	if err != nil {
		return out, err
	}
	group, err := userDB(files, "/etc/group")
	if err != nil {
		return out, err
	}
	name, grp, hasGroup := strings.Cut(spec, ":")
	var entry []string
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		out.UID = uint32(n)
		entry = findEntry(passwd, 2, name)
	} else {
		if entry = findEntry(passwd, 0, name); entry == nil {
			return out, fmt.Errorf("user %q: not in the image's /etc/passwd", name)
		}
		uid, err := strconv.ParseUint(entry[2], 10, 32)
		if err != nil {
			return out, fmt.Errorf("user %q: the image's /etc/passwd gives no number: %q", name, entry[2])
		}
		out.UID = uint32(uid)
	}
	if entry != nil {
		if gid, err := strconv.ParseUint(entry[3], 10, 32); err == nil {
			out.GID = uint32(gid)
		}
	}
	if hasGroup {
		gid, err := groupID(group, grp)
		if err != nil {
			return out, fmt.Errorf("group %q: %w", grp, err)
		}
		out.GID = gid
		return out, nil
	}
	if entry == nil {
		return out, nil
	}
	for _, g := range group {
		gid, err := strconv.ParseUint(g[2], 10, 32)
		if err != nil || uint32(gid) == out.GID || slices.Contains(out.AdditionalGids, uint32(gid)) {
			continue
		}
		if slices.Contains(strings.Split(g[3], ","), entry[0]) {
			out.AdditionalGids = append(out.AdditionalGids, uint32(gid))
		}
	}
	return out, nil
}

// userDB is the lines of /etc/passwd or /etc/group, split on ':' (those
// of at least four fields); none when the image has no such file.
func userDB(files *imagefs.Union, p string) ([][]string, error) {
	b, err := files.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the image's %s: %w", p, err)
	}
	var out [][]string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 4 && !strings.HasPrefix(line, "#") {
			out = append(out, f)
		}
	}
	return out, nil
}

// findEntry is the first line whose field i is v.
func findEntry(db [][]string, i int, v string) []string {
	for _, f := range db {
		if f[i] == v {
			return f
		}
	}
	return nil
}

// resolveGroup is a group's id: a number is itself, a name the image's
// /etc/group's.
func resolveGroup(g string, lays []string) (uint32, error) {
	files, err := imagefs.Open(lays)
	if err != nil {
		return 0, err
	}
	defer files.Close()
	group, err := userDB(files, "/etc/group")
	if err != nil {
		return 0, err
	}
	return groupID(group, g)
}

// groupID is g's id in group (the lines of an /etc/group): a number is
// itself.
func groupID(group [][]string, g string) (uint32, error) {
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return uint32(n), nil
	}
	e := findEntry(group, 0, g)
	if e == nil {
		return 0, fmt.Errorf("not in the image's /etc/group")
	}
	n, err := strconv.ParseUint(e[2], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("the image's /etc/group gives no number: %q", e[2])
	}
	return uint32(n), nil
}
