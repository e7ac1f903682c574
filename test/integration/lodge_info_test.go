package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLodgeInfo: lodge info counts what the host holds, system df says
// what it takes on disk and what a prune would give back, and inspect
// describes an image, a volume and a network by name, as docker's do.
func TestLodgeInfo(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	l.must("volume", "create", "infovol")
	t.Cleanup(func() {
		l.run("", "rm", "-f", "infoctr")
		l.run("", "volume", "rm", "infovol")
	})
	l.must("run", "-d", "--name", "infoctr", "--network", "none", "-v", "infovol:/data", ref, "sh", "-c",
		"dd if=/dev/zero of=/data/blob bs=1024 count=1024 2>/dev/null; dd if=/dev/zero of=/root.blob bs=1024 count=512 2>/dev/null; sync; touch /tmp/done; exec sleep 1000")
	l.eventually("the container wrote its files", func() bool { return l.run("", "exec", "infoctr", "test", "-e", "/tmp/done").code == 0 })
	if got := l.must("info", "-f", "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Volumes}} {{.Accelerator}}"); !strings.HasPrefix(got, "1 1 0 1 ") {
		t.Errorf("info with one running container: %q", got)
	}
	if out := l.must("info"); !strings.Contains(out, "Running:") || !strings.Contains(out, "Guest Kernel:") {
		t.Errorf("info:\n%s", out)
	}
	type row struct {
		Type               string
		TotalCount, Active int
		Size, Reclaimable  int64
	}
	df := func() map[string]row {
		t.Helper()
		rows := map[string]row{}
		for _, line := range strings.Split(strings.TrimSpace(l.must("system", "df", "--format", "json")), "\n") {
			var r row
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("system df --format json: %q: %v", line, err)
			}
			rows[r.Type] = r
		}
		return rows
	}
	rows := df()
	if v := rows["Local Volumes"]; v.TotalCount != 1 || v.Active != 1 || v.Size < 1<<20 || v.Reclaimable != 0 {
		t.Errorf("df's volumes: %+v", v)
	}
	if c := rows["Containers"]; c.TotalCount != 1 || c.Active != 1 || c.Size < 512<<10 || c.Reclaimable != 0 {
		t.Errorf("df's containers: %+v", c)
	}
	if i := rows["Images"]; i.TotalCount < 1 || i.Active != 1 || i.Size == 0 {
		t.Errorf("df's images: %+v", i)
	}
	l.must("stop", "-t", "0", "infoctr")
	if c := df()["Containers"]; c.Active != 0 || c.Reclaimable != c.Size {
		t.Errorf("df's containers after a stop: %+v", c)
	}
	if got := l.must("info", "-f", "{{.ContainersRunning}} {{.ContainersStopped}}"); got != "0 1\n" {
		t.Errorf("info after a stop: %q", got)
	}

	// inspect finds each kind by its name.
	for name, want := range map[string]string{
		"infoctr": `"State"`,
		ref:       `"RootFS"`,
		"infovol": `"Mountpoint"`,
		"lodge":   `"IPAM"`,
	} {
		if out := l.must("inspect", name); !strings.Contains(out, want) {
			t.Errorf("inspect %s: no %s in\n%s", name, want, out)
		}
	}
	if r := l.run("", "inspect", "--type", "volume", "infoctr"); r.code == 0 || !strings.Contains(r.stderr, "no such volume") {
		t.Errorf("inspect --type volume of a container: exit %d %s", r.code, r.stderr)
	}
	if r := l.run("", "inspect", "nosuchthing"); r.code == 0 || !strings.Contains(r.stderr, "no such object: nosuchthing") {
		t.Errorf("inspect of nothing: exit %d %s", r.code, r.stderr)
	}
}
