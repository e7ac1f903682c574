package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// qemuOf is the PID of the QEMU that runs the container id.
func qemuOf(t *testing.T, id string) int {
	t.Helper()
	for _, p := range processesMentioning(id) {
		pid, cmdline, _ := strings.Cut(p, ": ")
		if strings.HasPrefix(filepath.Base(strings.Fields(cmdline)[0]), "qemu-system") {
			n, err := strconv.Atoi(pid)
			if err == nil {
				return n
			}
		}
	}
	t.Fatalf("no QEMU process names container %s: %v", id, processesMentioning(id))
	return 0
}

// ctrState is what these tests read of `lodge inspect`.
type ctrState struct {
	ID    string `json:"Id"`
	State struct {
		Status     string
		Restarting bool
		ExitCode   int
		StartedAt  time.Time
	}
	RestartCount    int
	NetworkSettings *struct {
		IP string `json:"IPAddress"`
	}
}

func (l *lodgeCLI) inspect(name string) ctrState {
	l.t.Helper()
	var out []ctrState
	if err := json.Unmarshal([]byte(l.must("inspect", name)), &out); err != nil || len(out) != 1 {
		l.t.Fatalf("inspect %s: %v %v", name, out, err)
	}
	return out[0]
}

// eventually polls cond for up to two minutes (each start is a VM's).
func (l *lodgeCLI) eventually(what string, cond func() bool) {
	l.t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: not within 2 minutes", what)
		}
	}
}

// TestLodgeRestart: a container that has ended starts again with what it
// wrote to its root, its log going on and its network joined again;
// `lodge restart`; docker's restart policies, which `lodge stop` ends.
func TestLodgeRestart(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	var ids []string

	// start again: the root keeps what the first run wrote.
	ids = append(ids, strings.TrimSpace(l.must("run", "-d", "--name", "again", ref, "sh", "-c",
		`echo "run $(cat /count 2>/dev/null)"; echo x >> /count; exit 3`)))
	if code := strings.TrimSpace(l.must("wait", "again")); code != "3" {
		t.Fatalf("wait: %s", code)
	}
	first := l.inspect("again").State.StartedAt
	if out := l.must("start", "again"); out != "again\n" {
		t.Errorf("start printed %q, want the name given", out)
	}
	if code := strings.TrimSpace(l.must("wait", "again")); code != "3" {
		t.Errorf("wait after start again: %s", code)
	}
	if out := l.must("logs", "again"); out != "run \nrun x\n" {
		t.Errorf("logs of two runs: %q, want the second to find what the first wrote", out)
	}
	if s := l.inspect("again"); s.RestartCount != 0 || !s.State.StartedAt.After(first) || s.State.Status != "exited" {
		t.Errorf("inspect after a start by hand: %+v (first start %v)", s, first)
	}
	// start -a of one that has ended: attached before it runs again.
	if r := l.run("", "start", "-a", "again"); r.code != 3 || r.stdout != "run x\nx\n" {
		t.Errorf("start -a of an ended container: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if out := l.must("ps", "--filter", "status=exited", "--filter", "name=aga", "-q"); out != ids[0][:12]+"\n" {
		t.Errorf("ps --filter status=exited --filter name=aga: %q", out)
	}
	if out := l.must("container", "prune", "-f"); !strings.Contains(out, ids[0]) {
		t.Errorf("container prune: %q", out)
	}
	if out := l.must("ps", "-a", "-q"); out != "" {
		t.Errorf("after container prune: %q", out)
	}

	// restart of a running container on the bridge network: a new run,
	// its address in its /etc/hosts, its published port listed.
	ids = append(ids, strings.TrimSpace(l.must("run", "-d", "--name", "svc", "-p", "127.0.0.1::80", ref, "sh", "-c", "echo up; exec sleep 1000")))
	l.eventually("svc's first run", func() bool { return strings.Contains(l.must("logs", "svc"), "up") })
	l.must("restart", "-t", "1", "svc")
	if st := l.inspect("svc"); st.State.Status != "running" || st.NetworkSettings == nil || st.NetworkSettings.IP == "" {
		t.Fatalf("after restart: %+v", st)
	} else {
		if hosts := l.must("exec", "svc", "cat", "/etc/hosts"); !strings.Contains(hosts, st.NetworkSettings.IP+"\t") {
			t.Errorf("/etc/hosts after restart does not name its address %s:\n%s", st.NetworkSettings.IP, hosts)
		}
		if addr := l.must("exec", "svc", "ip", "-4", "addr", "show", "eth0"); !strings.Contains(addr, st.NetworkSettings.IP+"/") {
			t.Errorf("eth0 after restart has not the address %s:\n%s", st.NetworkSettings.IP, addr)
		}
	}
	if out := l.must("logs", "svc"); out != "up\nup\n" {
		t.Errorf("logs after restart: %q", out)
	}
	if port := l.must("port", "svc"); !strings.HasPrefix(port, "80/tcp -> 127.0.0.1:") {
		t.Errorf("port after restart: %q", port)
	}
	// inspect -f, ps and container ls filters, exec -d, logs' time bounds.
	if out := l.must("inspect", "-f", "{{.State.Status}} {{.NetworkSettings.IPAddress}} {{.RestartCount}}", "svc"); out != "running "+l.inspect("svc").NetworkSettings.IP+" 0\n" {
		t.Errorf("inspect -f: %q", out)
	}
	if out := l.must("container", "ls", "-q", "--filter", "ancestor="+ref); out != ids[1][:12]+"\n" {
		t.Errorf("container ls --filter ancestor=: %q", out)
	}
	if out := l.must("ps", "-q", "-f", "status=exited"); out != "" {
		t.Errorf("ps -f status=exited with none: %q", out)
	}
	l.must("exec", "-d", "svc", "sh", "-c", "sleep 1; echo bg > /tmp/bg")
	l.eventually("exec -d's command", func() bool { return l.run("", "exec", "svc", "cat", "/tmp/bg").stdout == "bg\n" })
	if out := l.must("logs", "--since", "1h", "svc"); out != "up\nup\n" {
		t.Errorf("logs --since 1h: %q", out)
	}
	if out := l.must("logs", "--until", "2000-01-01", "svc"); out != "" {
		t.Errorf("logs --until 2000-01-01: %q", out)
	}
	// pause, unpause, rename.
	l.must("pause", "svc")
	if ps := l.must("ps"); !strings.Contains(ps, "Up (Paused)") {
		t.Errorf("ps of a paused container:\n%s", ps)
	}
	if r := l.run("", "pause", "svc"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("pause of a paused container: exit %d, %s", r.code, r.stderr)
	}
	l.must("unpause", "svc")
	l.must("rename", "svc", "web")
	if out := l.must("exec", "web", "echo", "thawed"); out != "thawed\n" {
		t.Errorf("exec after unpause and rename: %q", out)
	}
	if r := l.run("", "inspect", "svc"); r.code == 0 {
		t.Errorf("the old name still finds the container")
	}
	l.must("rm", "-f", "web")

	// A start again that cannot have its host port: a clear error, the
	// container as it was, no network namespace left.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	pinned := strings.TrimSpace(l.must("run", "-d", "--name", "pinned", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), ref, "true"))
	ids = append(ids, pinned)
	if code := strings.TrimSpace(l.must("wait", "pinned")); code != "0" {
		t.Fatalf("wait pinned: %s", code)
	}
	l.eventually("pinned's network left", func() bool {
		_, err := os.Stat("/run/netns/lodge-" + pinned[:12])
		return os.IsNotExist(err)
	})
	squatter, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	r := l.run("", "start", "pinned")
	squatter.Close()
	if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprintf("host port %d/tcp is in use", port)) {
		t.Errorf("start again with its host port taken: exit %d, %s", r.code, r.stderr)
	}
	if s := l.inspect("pinned"); s.State.Status != "exited" || s.State.ExitCode != 0 {
		t.Errorf("after a failed start again: %+v", s)
	}
	if _, err := os.Stat("/run/netns/lodge-" + pinned[:12]); !os.IsNotExist(err) {
		t.Errorf("a failed start again left its network namespace: %v", err)
	}
	l.must("start", "pinned") // the port is free again
	if code := strings.TrimSpace(l.must("wait", "pinned")); code != "0" {
		t.Errorf("wait pinned after its second start: %s", code)
	}
	l.must("rm", "pinned")

	// on-failure:2: two restarts, then it stays ended.
	ids = append(ids, strings.TrimSpace(l.must("run", "-d", "--restart", "on-failure:2", "--name", "flaky", ref, "sh", "-c", "echo attempt; exit 1")))
	l.eventually("on-failure:2's restarts", func() bool {
		s := l.inspect("flaky")
		return s.RestartCount == 2 && s.State.Status == "exited" && !s.State.Restarting
	})
	time.Sleep(2 * time.Second) // a third would have begun by now
	if s := l.inspect("flaky"); s.RestartCount != 2 || s.State.ExitCode != 1 || s.State.Status != "exited" {
		t.Errorf("on-failure:2 after its retries: %+v", s)
	}
	if out := l.must("logs", "flaky"); strings.Count(out, "attempt\n") != 3 {
		t.Errorf("on-failure:2 ran %d times, want 3:\n%s", strings.Count(out, "attempt\n"), out)
	}
	l.must("rm", "flaky")

	// on-failure: a container whose VM is killed starts again.
	crashy := strings.TrimSpace(l.must("run", "-d", "--restart", "on-failure", "--name", "crashy", ref, "sh", "-c", "echo boot; exec sleep 1000"))
	ids = append(ids, crashy)
	l.eventually("crashy's first run", func() bool { return strings.Contains(l.must("logs", "crashy"), "boot") })
	qemu := qemuOf(t, crashy)
	if err := syscall.Kill(qemu, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l.eventually("a restart after its VM was killed", func() bool {
		s := l.inspect("crashy")
		return s.RestartCount == 1 && s.State.Status == "running"
	})
	l.eventually("the second run's output in the log", func() bool { return l.must("logs", "crashy") == "boot\nboot\n" })
	if s := l.inspect("crashy"); s.State.Status != "running" {
		t.Errorf("after a restart from a killed VM: %+v", s)
	}
	if again := qemuOf(t, crashy); again == qemu {
		t.Errorf("the same QEMU (%d) after the restart", qemu)
	}
	l.must("rm", "-f", "crashy")

	// always: restarted after a success, until lodge stop.
	ids = append(ids, strings.TrimSpace(l.must("run", "-d", "--restart", "always", "--name", "forever", ref, "sh", "-c", "echo tick; sleep 1")))
	l.eventually("always's first restart", func() bool { return l.inspect("forever").RestartCount >= 1 })
	l.must("stop", "-t", "1", "forever")
	l.eventually("stop of an always container", func() bool {
		s := l.inspect("forever")
		return s.State.Status == "exited" && !s.State.Restarting
	})
	n := l.inspect("forever").RestartCount
	time.Sleep(3 * time.Second)
	if s := l.inspect("forever"); s.RestartCount != n || s.State.Status != "exited" {
		t.Errorf("an always container after lodge stop: %+v, was stopped after %d restarts", s, n)
	}
	l.must("rm", "forever")

	// A foreground run's policy restarts it in the background once the
	// run has returned its exit code.
	r = l.run("", "run", "--restart", "on-failure:1", "--name", "fg", ref, "sh", "-c", "echo fg; exit 2")
	if r.code != 2 || r.stdout != "fg\n" {
		t.Errorf("foreground run: exit %d, %q", r.code, r.stdout)
	}
	ids = append(ids, l.inspect("fg").ID)
	l.eventually("the foreground run's restart", func() bool {
		s := l.inspect("fg")
		return s.RestartCount == 1 && s.State.Status == "exited" && !s.State.Restarting
	})
	if out := l.must("logs", "fg"); out != "fg\n" {
		t.Errorf("logs of the restarted run: %q", out)
	}
	l.must("rm", "fg")

	// A command word of the runtime's helpers in a container's command
	// is the container's.
	if out := l.must("run", "--rm", ref, "echo", "__supervise"); out != "__supervise\n" {
		t.Errorf("run echo __supervise: %q", out)
	}
	if r := l.run("", "run", "--rm", "--restart", "always", ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "--rm") {
		t.Errorf("--rm with --restart: exit %d, %s", r.code, r.stderr)
	}
	if r := l.run("", "run", "--restart", "sometimes", ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "on-failure") {
		t.Errorf("--restart sometimes: exit %d, %s", r.code, r.stderr)
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Errorf("containers left: %q", ps)
	}
	time.Sleep(time.Second)
	for _, id := range ids {
		if procs := processesMentioning(id); len(procs) != 0 {
			t.Errorf("processes left: %v", procs)
		}
	}
}
