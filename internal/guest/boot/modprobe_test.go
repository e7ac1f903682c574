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
