package boot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookupModule(t *testing.T) {
	t.Parallel()
	list := filepath.Join(t.TempDir(), "modprobe.list")
	os.WriteFile(list, []byte("bridge /lodge/ondemand/llc.ko /lodge/ondemand/stp.ko /lodge/ondemand/bridge.ko\n"+
		"rtnl-link-bridge /lodge/ondemand/llc.ko /lodge/ondemand/stp.ko /lodge/ondemand/bridge.ko\n"+
		"net_failover /lodge/ondemand/net_failover.ko\n"), 0o644)
	got, err := lookupModule(list, "rtnl-link-bridge")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/lodge/ondemand/llc.ko", "/lodge/ondemand/stp.ko", "/lodge/ondemand/bridge.ko"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := lookupModule(list, "net-failover"); err != nil {
		t.Errorf("dashes and underscores are the same in module names: %v", err)
	}
	if _, err := lookupModule(list, "nbd"); err == nil {
		t.Error("unknown module found")
	}
	if code := Modprobe([]string{"-q", "--"}); code == 0 {
		t.Error("modprobe without a name succeeded")
	}
}

// A module the kernel has loaded already is not handed to it again (the
// kernel would read and verify the whole file before refusing it); one
// that is still coming up, or unknown, is.
func TestLoadModuleSkipsLiveModules(t *testing.T) {
	sys := t.TempDir()
	old := sysModule
	sysModule = sys
	t.Cleanup(func() { sysModule = old })
	for name, state := range map[string]string{"nf_conntrack": "live\n", "ext4": "coming\n"} {
		if err := os.MkdirAll(filepath.Join(sys, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sys, name, "initstate"), []byte(state), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	missing := t.TempDir()
	// The files do not exist: only a module that is skipped loads without error.
	if err := loadModule(filepath.Join(missing, "nf-conntrack.ko")); err != nil {
		t.Errorf("live module: %v, want it skipped", err)
	}
	for _, f := range []string{"ext4.ko", "erofs.ko"} {
		if err := loadModule(filepath.Join(missing, f)); err == nil {
			t.Errorf("%s (not live) was not loaded", f)
		}
	}
}

// A kernel with everything built in comes with an initrd without the
// list: asking for a module is then no error (a template's preload, a
// pod's NIC driver); with the list, a module it lacks is one.
func TestLoadModuleBuiltInKernel(t *testing.T) {
	old := modprobeList
	t.Cleanup(func() { modprobeList = old })
	modprobeList = filepath.Join(t.TempDir(), "modprobe.list")
	if err := LoadModule("9p"); err != nil {
		t.Errorf("no list: %v, want nothing to load", err)
	}
	if err := os.WriteFile(modprobeList, []byte("bridge /lodge/ondemand/bridge.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := LoadModule("9p"); err == nil {
		t.Error("a module missing from the list loaded without error")
	}
}
