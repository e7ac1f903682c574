package boot

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ModprobeList maps module names and aliases to on-demand module files
// (written by internal/guestimage as lodge/modprobe.list).
const ModprobeList = "/lodge/modprobe.list"

// modprobeList is where LoadModule reads the list (a variable for tests).
var modprobeList = ModprobeList

// ModprobePath is where the kernel runs its module loader; it links to the
// agent, which acts as modprobe when called by that name.
const ModprobePath = "/sbin/modprobe"

// keepFromInitrd copies what the agent still needs from the initramfs into
// the new root (at dir, before it becomes /): lodge-init, which SealInit
// seals (and then removes), and the on-demand modules with their list.
// Everything else under /lodge is freed with the initramfs.
func keepFromInitrd(dir string) error {
	if _, err := os.Stat(InitPath); err == nil {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(InitPath)), 0o755); err != nil {
			return err
		}
		if err := copyFile(InitPath, filepath.Join(dir, InitPath)); err != nil {
			return err
		}
	}
	if _, err := os.Stat(ModprobeList); err != nil {
		return nil
	}
	return filepath.WalkDir("/lodge", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != "/lodge" && p != ModprobeList && !strings.HasPrefix(p, "/lodge/ondemand") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(dir, p)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		return copyFile(p, dst)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Modprobe is the agent run as the kernel's modprobe ("modprobe -q --
// NAME"): it loads NAME's on-demand modules and returns the exit status.
func Modprobe(args []string) int {
	var name string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			name = a
			break
		}
	}
	if name == "" {
		fmt.Fprintln(os.Stderr, "modprobe: no module name")
		return 1
	}
	if err := LoadModule(name); err != nil {
		fmt.Fprintln(os.Stderr, "modprobe:", err)
		return 1
	}
	return 0
}

// LoadModule loads an on-demand module by name or alias, after the
// on-demand modules it needs; one already loaded is fine. An initrd
// without the list is a kernel's with everything built in: nothing to load.
func LoadModule(name string) error {
	paths, err := lookupModule(modprobeList, name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := loadModule(p); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func lookupModule(list, name string) ([]string, error) {
	f, err := os.Open(list)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := strings.ReplaceAll(name, "-", "_")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 1 && (fs[0] == name || strings.ReplaceAll(fs[0], "-", "_") == want) {
			return fs[1:], nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("module %s not found in %s", name, list)
}
