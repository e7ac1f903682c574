package integration

import (
	"strconv"
	"strings"
	"testing"
)

// TestLodgeUpdate: lodge update changes a running container's limits in
// its guest at once, and its restart policy; a limit beyond what its VM
// was sized for is said to take effect at the next start, and does; a
// stopped container's new limits are those of its next start; what
// cannot be changed is refused.
func TestLodgeUpdate(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	limits := `echo $(cat /sys/fs/cgroup/memory.max) $(cat /sys/fs/cgroup/cpu.max) $(cat /sys/fs/cgroup/pids.max)`
	l.must("run", "-d", "--name", "upd", "--network", "none", "-m", "256m", "--cpus", "1", ref, "sleep", "1000")
	if got := l.must("exec", "upd", "sh", "-c", limits); got != "268435456 100000 100000 max\n" {
		t.Fatalf("limits at the start: %q", got)
	}
	r := l.run("", "update", "-m", "128m", "--cpus", "0.5", "--pids-limit", "20", "--restart", "always", "upd")
	if r.code != 0 || r.stdout != "upd\n" || r.stderr != "" {
		t.Fatalf("update: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := l.must("exec", "upd", "sh", "-c", limits); got != "134217728 50000 100000 20\n" {
		t.Fatalf("limits after update: %q", got)
	}
	if got := l.must("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", "upd"); got != "always\n" {
		t.Fatalf("restart policy after update: %q", got)
	}

	// Beyond the VM: said, applied in the guest, and whole at the next start.
	r = l.run("", "update", "-m", "1g", "upd")
	if r.code != 0 || !strings.Contains(r.stderr, "takes effect when it starts again") {
		t.Fatalf("update beyond the VM: exit %d\n%s", r.code, r.stderr)
	}
	memTotal := func() int {
		t.Helper()
		f := strings.Fields(l.must("exec", "upd", "grep", "MemTotal", "/proc/meminfo"))
		kb, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("MemTotal: %q", f)
		}
		return kb
	}
	if kb := memTotal(); kb > 600<<10 {
		t.Fatalf("the running VM has %d kB: it was sized for 256m", kb)
	}
	l.must("restart", "-t", "0", "upd")
	if kb := memTotal(); kb < 1<<20 {
		t.Fatalf("after a restart the VM has %d kB, want room for 1g", kb)
	}
	if got := l.must("exec", "upd", "sh", "-c", limits); got != "1073741824 50000 100000 20\n" {
		t.Fatalf("limits after the restart: %q", got)
	}

	// A stopped container's: its next start's.
	l.must("stop", "-t", "0", "upd")
	l.must("update", "--cpus", "1", "--pids-limit", "-1", "upd")
	l.must("start", "upd")
	if got := l.must("exec", "upd", "sh", "-c", limits); got != "1073741824 100000 100000 max\n" {
		t.Fatalf("limits of a start after an update while stopped: %q", got)
	}

	for args, want := range map[string]string{
		"upd":                     "nothing to change",
		"-m 1k upd":               "6m or more",
		"--cpus 0 upd":            "--cpus 0",
		"--restart sometimes upd": "restart",
		"--timeout 1m nosuch":     "nosuch",
	} {
		r := l.run("", append([]string{"update"}, strings.Fields(args)...)...)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("update %s: exit %d, %q, want %q", args, r.code, r.stderr, want)
		}
	}
	l.must("rm", "-f", "upd")
	l.must("run", "-d", "--rm", "--name", "upd-rm", "--network", "none", ref, "sleep", "1000")
	if r := l.run("", "update", "--restart", "always", "upd-rm"); r.code == 0 || !strings.Contains(r.stderr, "--rm") {
		t.Errorf("a restart policy for an --rm container: exit %d %s", r.code, r.stderr)
	}
	l.must("rm", "-f", "upd-rm")
}
