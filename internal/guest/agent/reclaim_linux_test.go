package agent

import (
	"os"
	"path/filepath"
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

func TestCgroup2Dir(t *testing.T) {
	for in, want := range map[string]string{
		"0::/lodge/abc\n":                        "/sys/fs/cgroup/lodge/abc",
		"12:memory:/x\n1:name=systemd:/y\n0::/z": "/sys/fs/cgroup/z", // hybrid
		"0::/\n":                                 "/sys/fs/cgroup",
		"0::/a/../../etc\n":                      "/sys/fs/cgroup/etc",
		"12:memory:/x\n":                         "",
		"0::relative\n":                          "",
	} {
		got, ok := cgroup2Dir([]byte(in))
		if got != want || ok != (want != "") {
			t.Errorf("%q: %q %v, want %q", in, got, ok, want)
		}
	}
}
