package sandboxsvc

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What the files API does beyond reading and writing (commands.go), as
// E2B's sandbox filesystem has it: a file's details, a directory's
// entries, removal, a move and a new directory. Each is a command in the
// sandbox (stat, find, rm, mv, mkdir: busybox and coreutils have them),
// so it sees the sandbox's files exactly as its programs do, through no
// host path.

// FileInfo is a file of a sandbox.
type FileInfo struct {
	Name       string    `json:"name"`
	Path       string    `json:"path"`
	Type       string    `json:"type"` // file, dir, symlink or other
	Size       int64     `json:"size"`
	Mode       string    `json:"mode"` // permissions, octal ("644")
	ModifiedAt time.Time `json:"modified_at"`
}

// statFormat is what the sandbox's stat prints of a file; the name comes
// last, so that a name holding the separator is read whole.
const statFormat = "%F|%s|%a|%Y|%n"

// parseStat reads stat's lines (statFormat), each entry's path p joined
// to dir. A line that is no entry continues the name before it (a name
// holding a newline).
func parseStat(out []byte, dir string) []FileInfo {
	var infos []FileInfo
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		f := strings.SplitN(line, "|", 5)
		var size, mtime int64
		var err1, err2 error
		if len(f) == 5 {
			size, err1 = strconv.ParseInt(f[1], 10, 64)
			mtime, err2 = strconv.ParseInt(f[3], 10, 64)
			if _, err := strconv.ParseUint(f[2], 8, 32); err != nil {
				err1 = err
			}
		}
		if len(f) != 5 || err1 != nil || err2 != nil {
			if n := len(infos); n > 0 {
				infos[n-1].Name += "\n" + line
			}
			continue
		}
		infos = append(infos, FileInfo{Name: f[4], Type: fileType(f[0]), Size: size, Mode: f[2],
			ModifiedAt: time.Unix(mtime, 0).UTC()})
	}
	for i := range infos {
		name := strings.TrimPrefix(infos[i].Name, "./")
		if dir == "" {
			infos[i].Path, infos[i].Name = name, path.Base(name)
		} else {
			infos[i].Path, infos[i].Name = path.Join(dir, name), name
		}
	}
	return infos
}

func fileType(statType string) string {
	switch {
	case strings.HasPrefix(statType, "regular"):
		return "file"
	case statType == "directory":
		return "dir"
	case statType == "symbolic link":
		return "symlink"
	}
	return "other"
}

// Stat gives a file's details (a link's own, not its target's).
func (s *Service) Stat(ctx context.Context, id, p string) (*FileInfo, error) {
	if err := checkDir(p); err != nil {
		return nil, err
	}
	out, err := s.fileOp(ctx, id, "stat", p, []string{"stat", "-c", statFormat, "--", p}, nil)
	if err != nil {
		return nil, err
	}
	infos := parseStat(out, "")
	if len(infos) != 1 {
		return nil, fmt.Errorf("stat %s: the sandbox's stat printed %q", p, truncate(string(out), 200))
	}
	infos[0].Path = path.Clean(p)
	return &infos[0], nil
}

// ListDir gives a directory's entries, by name.
func (s *Service) ListDir(ctx context.Context, id, dir string) ([]FileInfo, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	script := `cd -- "$1" && find . -mindepth 1 -maxdepth 1 -exec stat -c '` + statFormat + `' -- {} +`
	out, err := s.fileOp(ctx, id, "list", dir, []string{"/bin/sh", "-c", script, "sh", dir}, nil)
	if err != nil {
		return nil, err
	}
	infos := []FileInfo{}
	if len(out) > 0 {
		infos = parseStat(out, path.Clean(dir))
	}
	slices.SortFunc(infos, func(a, b FileInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, nil
}

// RemoveFile removes a file or a directory with what it holds.
func (s *Service) RemoveFile(ctx context.Context, id, p string) error {
	if err := checkPath(p); err != nil {
		return err
	}
	script := `if [ ! -e "$1" ] && [ ! -L "$1" ]; then echo "$1: No such file or directory" >&2; exit 1; fi; rm -rf -- "$1"`
	_, err := s.fileOp(ctx, id, "remove", p, []string{"/bin/sh", "-c", script, "sh", p}, nil)
	return err
}

// MakeDir makes a directory, with its parents.
func (s *Service) MakeDir(ctx context.Context, id, p string) error {
	if err := checkPath(p); err != nil {
		return err
	}
	_, err := s.fileOp(ctx, id, "mkdir", p, []string{"mkdir", "-p", "--", p}, nil)
	return err
}

// MoveRequest is a move's body.
type MoveRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// MoveFile moves (renames) a file or directory, making the destination's
// directory.
func (s *Service) MoveFile(ctx context.Context, id string, req MoveRequest) error {
	if err := checkPath(req.From); err != nil {
		return err
	}
	if err := checkPath(req.To); err != nil {
		return err
	}
	script := `mkdir -p -- "$(dirname -- "$2")" && mv -- "$1" "$2"`
	_, err := s.fileOp(ctx, id, "move", req.From, []string{"/bin/sh", "-c", script, "sh", req.From, req.To}, nil)
	return err
}

// checkDir is checkPath for a path that may be the root.
func checkDir(p string) error {
	if p == "/" {
		return nil
	}
	return checkPath(p)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
