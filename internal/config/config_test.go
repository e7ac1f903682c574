package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	cfg, err := LoadFile(write("ok.toml", "[guest]\ndir = \"/opt/lodge\"\n[vmm]\naccel = \"tcg\"\nboot_timeout = \"90s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Guest.Kernel != "/opt/lodge/vmlinux" || cfg.VMM.Accel != "tcg" || cfg.VMM.BootTimeout.Duration != 90*time.Second ||
		cfg.VMM.MemoryMiB != 256 {
		t.Fatalf("got %+v", cfg)
	}
	for name, c := range map[string]struct{ body, want string }{
		"unknown key":          {"[vmm]\nspeed = 3\n", "unknown key"},
		"bad accel":            {"[vmm]\naccel = \"hvf\"\n", "vmm.accel"},
		"relative":             {"[guest]\ndir = \"guest\"\n", "absolute"},
		"bad toml":             {"[vmm\n", "config"},
		"bad time":             {"[vmm]\nboot_timeout = \"soon\"\n", "config"},
		"template dir":         {"[template]\ndir = \"tpl\"\n", "template.dir"},
		"tiny class":           {"[template]\nmemory_classes_mib = [32]\n", "memory_classes_mib"},
		"pool cgroup relative": {"[template]\npool_cgroup = \"lodge-pool\"\n", "template.pool_cgroup"},
		"pool cgroup root":     {"[template]\npool_cgroup = \"/\"\n", "template.pool_cgroup"},
		"pool cgroup escapes":  {"[template]\npool_cgroup = \"/a/../../b\"\n", "template.pool_cgroup"},
		"pool cgroup systemd":  {"[template]\npool_cgroup = \"system.slice:lodge:pool\"\n", "template.pool_cgroup"},
	} {
		if _, err := LoadFile(write(name+".toml", c.body)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
}

func TestLoadEnv(t *testing.T) {
	t.Setenv(EnvPath, filepath.Join(t.TempDir(), "missing.toml"))
	if _, err := Load(); err == nil {
		t.Fatal("a config file named in $LODGE_CONFIG that does not exist was ignored")
	}
}

func TestTemplateDefaultsAndOptOut(t *testing.T) {
	t.Parallel()
	d := Default()
	if !d.Template.Enabled || d.Template.Dir != DefaultTemplateDir || len(d.Template.MemoryClassesMiB) == 0 ||
		d.Template.PoolCgroup != DefaultPoolCgroup {
		t.Fatalf("template defaults: %+v", d.Template)
	}
	for v, want := range map[string]bool{"": false, "true": false, "false": true} {
		ann := map[string]string{}
		if v != "" {
			ann[AnnotationTemplate] = v
		}
		why, err := TemplateOptOut(ann)
		if err != nil || (why != "") != want {
			t.Errorf("%q: %q, %v", v, why, err)
		}
	}
	if _, err := TemplateOptOut(map[string]string{AnnotationTemplate: "no"}); err == nil {
		t.Error("io.lodge.template=no accepted")
	}
}

// QEMU's user range must leave every 16-bit id to the owners of clones'
// files (their QEMU's user namespace maps the ids below it).
func TestQEMUUIDRange(t *testing.T) {
	for _, tc := range []struct {
		first, count int
		ok           bool
	}{
		{DefaultQEMUUIDFirst, 65536, true},
		{100000, 65536, true},
		{0, 0, true},
		{2000, 65536, false},
		{65535, 10, false},
		{1<<32 - 10, 100, false},
	} {
		c := Default()
		c.VMM.QEMUUIDFirst, c.VMM.QEMUUIDCount = tc.first, tc.count
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("first %d count %d: %v, want ok=%v", tc.first, tc.count, err, tc.ok)
		}
	}
}
