package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMemoryStat(t *testing.T) {
	dir := t.TempDir()
	stat := "anon 180224\nfile 52051968\nfile_mapped 1277952\nactive_file 1576960\ninactive_file 50446336\nbogus\nsock x\n"
	if err := os.WriteFile(filepath.Join(dir, "memory.stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := memoryStat(dir)
	if err != nil || st["file"] != 52051968 || st["file_mapped"] != 1277952 || st["inactive_file"] != 50446336 || len(st) != 5 {
		t.Errorf("memoryStat: %v %v", st, err)
	}
	if n, err := fileCache(dir); n != 52051968 || err != nil {
		t.Errorf("fileCache: %d %v", n, err)
	}
	os.WriteFile(filepath.Join(dir, "memory.stat"), []byte("anon 1\n"), 0o644)
	if _, err := fileCache(dir); err == nil {
		t.Error("fileCache of a stat without file: no error")
	}
}

func TestCgroupOf(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		t.Skip("no cgroup v2 here")
	}
	dir, err := cgroupOf(os.Getpid())
	if err != nil || !strings.HasPrefix(dir, cgroupRoot+"/") && dir != cgroupRoot {
		t.Fatalf("cgroupOf: %q %v", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		t.Errorf("%s: %v", dir, err)
	}
}
