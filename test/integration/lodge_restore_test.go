package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostStops ends container id as a host that stops ends it: its monitor,
// supervisor and VM processes killed at once (the monitor first, so that
// nothing records the end or starts it again), and what lived in /run
// gone: its runtime state and network namespace. These are processes
// lodge started for the test, found by PID.
func (l *lodgeCLI) hostStops(id string) {
	l.t.Helper()
	var pids []int
	lock := filepath.Join(l.dir, "containers", id, "monitor.lock")
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, _ := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); target == lock {
				pids = append(pids, pid)
				break
			}
		}
	}
	if len(pids) == 0 {
		l.t.Fatalf("container %s has no monitor holding %s", id, lock)
	}
	stateDir := filepath.Join("/run/lodge/lodge", id)
	var st struct {
		Pid     int `json:"pid"`
		VMProcs []struct {
			Pid int `json:"pid"`
		} `json:"vm_procs"`
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "state.json"))
	if err != nil || json.Unmarshal(b, &st) != nil {
		l.t.Fatalf("runtime state of %s: %v", id, err)
	}
	pids = append(pids, st.Pid)
	for _, v := range st.VMProcs {
		pids = append(pids, v.Pid)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range pids {
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	os.RemoveAll(stateDir)
	exec.Command("ip", "netns", "del", "lodge-"+id[:12]).Run()
}

// TestLodgeRestore: after the host stops, `lodge system restore` starts
// again what docker's daemon would at its start (always, even after a
// stop by hand; unless-stopped unless stopped by hand; on-failure cut
// short by the stop), on their network, with their volumes and what they
// wrote, removes a --rm one (with its network address), and leaves the
// others.
func TestLodgeRestore(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	l.must("network", "create", "restorenet")
	l.must("network", "create", "restorenet2")
	names := []string{"always", "always-stop", "unless", "unless-stop", "failure", "nopolicy", "autoremove"}
	t.Cleanup(func() {
		l.run("", append([]string{"rm", "-f", "-v"}, names...)...)
		l.run("", "network", "rm", "restorenet", "restorenet2")
		l.run("", "volume", "rm", "restorevol")
	})
	// sync: what a guest has not written back when its host stops is
	// lost, as in any VM's; the test is of what restore starts.
	counting := `echo run >> /data/runs; echo mine >> /mine; sync; touch /tmp/synced; exec sleep 1000`
	ids := map[string]string{}
	for name, args := range map[string][]string{
		"always":      {"--restart", "always", "--network", "restorenet", "--network", "restorenet2", "-v", "restorevol:/data"},
		"always-stop": {"--restart", "always", "--network", "none"},
		"unless":      {"--restart", "unless-stopped", "--network", "none"},
		"unless-stop": {"--restart", "unless-stopped", "--network", "none"},
		"failure":     {"--restart", "on-failure", "--network", "none"},
		"nopolicy":    {"--network", "none"},
		"autoremove":  {"--rm", "--network", "restorenet"},
	} {
		run := append(append([]string{"run", "-d", "--name", name}, args...), ref, "sh", "-c", "mkdir -p /data; "+counting)
		ids[name] = strings.TrimSpace(l.must(run...))
	}
	for name := range ids {
		l.eventually(name+" wrote and synced", func() bool { return l.run("", "exec", name, "test", "-e", "/tmp/synced").code == 0 })
	}
	l.must("stop", "-t", "0", "always-stop", "unless-stop")
	for _, name := range []string{"always", "unless", "failure", "nopolicy", "autoremove"} {
		l.hostStops(ids[name])
	}
	if ps := l.must("ps", "-q"); ps != "" {
		t.Fatalf("running after the host stopped:\n%s", ps)
	}
	out := l.must("system", "restore")
	got := strings.Fields(out)
	want := []string{"always", "always-stop", "failure", "unless"}
	slices.Sort(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("restore started %q, want %q", got, want)
	}
	if all := l.must("ps", "-a", "--format", "{{.Names}}"); strings.Contains(all, "autoremove") {
		t.Errorf("restore left the --rm container the host's stop cut short:\n%s", all)
	}
	running := strings.Fields(l.must("ps", "--format", "{{.Names}}"))
	slices.Sort(running)
	if strings.Join(running, " ") != strings.Join(want, " ") {
		t.Fatalf("running after restore: %q", running)
	}
	// restore returns once each container has started, not once its
	// command has appended its line: wait for the line, then compare.
	l.eventually("always ran again", func() bool { return strings.Count(l.run("", "exec", "always", "cat", "/mine").stdout, "mine") >= 2 })
	if out := l.must("exec", "always", "sh", "-c", "cat /data/runs /mine | tr '\\n' ' '"); out != "run run mine mine " {
		t.Errorf("always's volume and root after restore: %q", out)
	}
	st := l.inspect("always")
	if st.NetworkSettings == nil || st.NetworkSettings.IP == "" {
		t.Fatalf("always is not on its network after restore: %+v", st)
	}
	if nets := l.must("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "always"); nets != "restorenet restorenet2 \n" {
		t.Errorf("always's networks after restore: %q", nets)
	}
	if hosts := l.must("exec", "always", "cat", "/etc/hosts"); !strings.Contains(hosts, st.NetworkSettings.IP+"\t") {
		t.Errorf("always's /etc/hosts does not name its address %s:\n%s", st.NetworkSettings.IP, hosts)
	}
	// Again: nothing to start.
	if out := l.must("system", "restore"); out != "" {
		t.Errorf("a second restore started %q", out)
	}

	// An orderly shutdown: every running container stopped at once, none
	// started again by its policy, what each wrote to its root kept
	// though it never synced; restore brings back the same ones.
	for _, name := range want {
		l.must("exec", name, "sh", "-c", "echo late >> /mine")
	}
	got = strings.Fields(l.must("system", "shutdown"))
	slices.Sort(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("shutdown stopped %q, want %q", got, want)
	}
	time.Sleep(2 * time.Second) // a policy's restart would come within 100 ms of the end
	if ps := l.must("ps", "-q"); ps != "" {
		t.Fatalf("running after the shutdown:\n%s", ps)
	}
	got = strings.Fields(l.must("system", "restore"))
	slices.Sort(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("restore after a shutdown started %q, want %q", got, want)
	}
	for _, name := range want {
		// Each start appends "mine": the three runs' and the late line.
		l.eventually(name+" ran a third time", func() bool { return strings.Count(l.run("", "exec", name, "cat", "/mine").stdout, "mine") >= 3 })
		if out := l.must("exec", name, "cat", "/mine"); !strings.HasSuffix(out, "mine\nlate\nmine\n") {
			t.Errorf("%s lost what it wrote before the shutdown: %q", name, out)
		}
	}
}
