package hostcg

import (
	"path/filepath"
	"strings"
	"testing"
)

// A spec's cgroupsPath comes from whoever wrote the spec (a pod's user
// under containerd): whatever it says, the cgroup Lodge joins, limits or
// removes is below the host's cgroup filesystem.
func TestHostilePathsStayInCgroupfs(t *testing.T) {
	for _, p := range []string{"../../../../etc", "/../../etc/x", "pod/../../../../../root", "a/./../../..//etc", "kubepods/../../../proc/1"} {
		m, err := managerFor(p, nil)
		if err != nil {
			t.Logf("%q: refused: %v", p, err)
			continue
		}
		got := filepath.Clean(m.Path(""))
		if !strings.HasPrefix(got, "/sys/fs/cgroup/") && got != "/sys/fs/cgroup" {
			t.Errorf("cgroupsPath %q resolves to %s, outside /sys/fs/cgroup", p, got)
		}
	}
}
