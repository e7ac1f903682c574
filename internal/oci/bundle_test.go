package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"}}`

func TestLoadBundle(t *testing.T) {
	t.Parallel()
	mk := func(config string, rootfs bool) string {
		d := t.TempDir()
		if config != "" {
			os.WriteFile(filepath.Join(d, "config.json"), []byte(config), 0o644)
		}
		if rootfs {
			os.Mkdir(filepath.Join(d, "rootfs"), 0o755)
		}
		return d
	}
	b, err := LoadBundle(mk(good, true))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(b.Rootfs) || b.Spec.Process.Args[0] != "/bin/true" {
		t.Fatalf("bundle = %+v", b)
	}
	for name, c := range map[string]struct {
		dir  string
		want string
	}{
		"no config":    {mk("", true), "no config.json"},
		"invalid json": {mk("{", true), "not valid JSON"},
		"no rootfs":    {mk(good, false), "root filesystem"},
		"empty args":   {mk(strings.Replace(good, `"/bin/true"`, ``, 1), true), "process.args"},
		"no version":   {mk(strings.Replace(good, `"ociVersion":"1.0.2",`, ``, 1), true), "ociVersion"},
		"relative cwd": {mk(strings.Replace(good, `"cwd":"/"`, `"cwd":"tmp"`, 1), true), "process.cwd"},
		"no process":   {mk(`{"ociVersion":"1.0.2","root":{"path":"rootfs"}}`, true), "no process"},
	} {
		_, err := LoadBundle(c.dir)
		if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrBadBundle mentioning %q", name, err, c.want)
		}
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(good))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err == nil && (s.Process == nil || len(s.Process.Args) == 0 || s.Root == nil) {
			t.Fatalf("accepted incomplete spec %q", b)
		}
	})
}
