package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/guest/directinit"
	"github.com/lodgeruntime/lodge/internal/seccompbpf"
)

// The main goroutine keeps the main thread, as in lodge-agent, so that
// onOwnThread never changes the thread /proc/self shows.
func init() { runtime.LockOSThread() }

// TestMain: the test binary is its containers' first step, as lodge-agent
// is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
	if len(os.Args) > 1 && os.Args[1] == DirectArg {
		directinit.Main()
		os.Exit(127)
	}
	if len(os.Args) > 1 && os.Args[1] == seccompbpf.SpecArg {
		if err := SeccompSpecMain(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pauseSpec is a pod sandbox container's spec as containerd's CRI makes
// it, in the guest (no network namespace: the pod's is the VM's).
func pauseSpec() *specs.Spec {
	return &specs.Spec{
		Hostname: "podhost",
		Process: &specs.Process{Args: []string{"sleep", "1000"}, Env: []string{"PATH=/bin"},
			User:            specs.User{UID: 65535, GID: 65535},
			Capabilities:    &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_KILL"}},
			NoNewPrivileges: true},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
			Sysctl: map[string]string{"kernel.msgmax": "12345"},
		},
	}
}

// pauseRoot is a root with busybox as /bin/busybox and /bin/sleep.
func pauseRoot(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755)
	os.Symlink("busybox", filepath.Join(root, "bin", "sleep"))
	return root
}

// A spec that a pod holder cannot serve as asked gets a full container,
// with the reason; one it can serve gets a plan with the program found in
// the root through the container's PATH.
func TestPlanHolder(t *testing.T) {
	root := pauseRoot(t)
	os.WriteFile(filepath.Join(root, "bin", "suid"), []byte("x"), 0o755)
	os.Chmod(filepath.Join(root, "bin", "suid"), 0o755|os.ModeSetuid)
	// A symlink to the host's busybox, and one to the root's own.
	os.Symlink("../../../../../../usr/bin/busybox", filepath.Join(root, "bin", "escape"))
	os.Symlink("/bin/busybox", filepath.Join(root, "bin", "abs"))
	plan, why := planHolder(pauseSpec(), root, nil)
	if plan == nil {
		t.Fatalf("the pause spec needs a full container: %s", why)
	}
	if plan.path != "/bin/busybox" || plan.cloneflags != unix.CLONE_NEWPID|unix.CLONE_NEWIPC|unix.CLONE_NEWUTS ||
		plan.sysctls["kernel.msgmax"] != "12345" || len(plan.bounding) != 2 || plan.cred.Uid != 65535 {
		t.Errorf("plan %+v", plan)
	}
	if p, why := planHolder(func() *specs.Spec { s := pauseSpec(); s.Process.Args[0] = "/bin/abs"; return s }(), root, nil); p == nil || p.path != "/bin/busybox" {
		t.Errorf("a symlink to the program: %+v, %s", p, why)
	}
	for name, c := range map[string]struct {
		edit  func(*specs.Spec)
		stdio *agentv1.Stdio
		why   string
	}{
		"seccomp": {edit: func(s *specs.Spec) { s.Linux.Seccomp = &specs.LinuxSeccomp{} }, why: "seccomp"},
		"user ns": {edit: func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		}, why: "user namespace"},
		"ns path":              {edit: func(s *specs.Spec) { s.Linux.Namespaces[1].Path = "/proc/1/ns/ipc" }, why: "ipc namespace"},
		"net sysctl":           {edit: func(s *specs.Spec) { s.Linux.Sysctl["net.ipv4.ip_forward"] = "1" }, why: "sysctl net.ipv4.ip_forward"},
		"ipc sysctl, host ipc": {edit: func(s *specs.Spec) { s.Linux.Namespaces = s.Linux.Namespaces[:1] }, why: "sysctl kernel.msgmax"},
		"hostname, host uts": {edit: func(s *specs.Spec) {
			s.Linux.Namespaces = s.Linux.Namespaces[:2]
			s.Linux.Sysctl = nil
		}, why: "UTS namespace"},
		"unknown cap":  {edit: func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_NOPE"} }, why: "CAP_NOPE"},
		"terminal":     {edit: func(s *specs.Spec) { s.Process.Terminal = true }, why: "terminal"},
		"stdio":        {stdio: &agentv1.Stdio{Stdout: true}, why: "stdio"},
		"missing":      {edit: func(s *specs.Spec) { s.Process.Args[0] = "pause" }, why: `"pause" is not an executable`},
		"outside root": {edit: func(s *specs.Spec) { s.Process.Args[0] = "escape" }, why: "not an executable"},
		"setuid":       {edit: func(s *specs.Spec) { s.Process.Args[0] = "suid" }, why: "setuid"},
	} {
		s := pauseSpec()
		if c.edit != nil {
			c.edit(s)
		}
		p, why := planHolder(s, root, c.stdio)
		if p != nil || !strings.Contains(why, c.why) {
			t.Errorf("%s: plan %+v, why %q, want a full container because of %q", name, p, why, c.why)
		}
	}
}

// A holder runs its program in new namespaces named and set as its spec
// says, in its cgroup, with its bounding set and no_new_privs; Destroy
// leaves no process or cgroup.
func TestHolder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := pauseRoot(t)
	spec := pauseSpec()
	plan, why := planHolder(spec, root, nil)
	if plan == nil {
		t.Fatal(why)
	}
	id := fmt.Sprintf("holder-test-%d", os.Getpid())
	spec.Root = &specs.Root{Path: root}
	spec.Linux.CgroupsPath = "/" + id
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	r := newReaper()
	h, err := startHolder(id, root, plan, cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	pid := h.proc.Pid
	exited := make(chan struct{})
	go func() { h.proc.Wait(); close(exited) }()
	defer h.Destroy()

	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, want := range []string{"NoNewPrivs:\t1", "Uid:\t65535\t65535\t65535\t65535", "CapEff:\t0000000000000000",
		fmt.Sprintf("CapBnd:\t%016x", 1<<unix.CAP_CHOWN|1<<unix.CAP_KILL)} {
		if !strings.Contains(string(status), want+"\n") {
			t.Errorf("holder status lacks %q:\n%s", want, status)
		}
	}
	// The thread that took the holder's root, bounding set and
	// no_new_privs ended with it: every thread left has the agent's.
	// (The main thread, locked in init, is what /proc/self shows.)
	same := func(task string) string {
		st, _ := os.ReadFile(task + "/status")
		mnt, _ := os.Readlink(task + "/ns/mnt")
		root, _ := os.Readlink(task + "/root")
		var keep []string
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "CapBnd:") || strings.HasPrefix(l, "NoNewPrivs:") {
				keep = append(keep, l)
			}
		}
		return fmt.Sprint(keep, mnt, root)
	}
	// The thread ends just after it hands its result over: one that is
	// still there after a while was kept, and Go could run anything on it.
	want := same("/proc/self")
	var odd []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		odd = nil
		tasks, _ := filepath.Glob("/proc/self/task/*")
		for _, task := range tasks {
			if got := same(task); got != want {
				odd = append(odd, fmt.Sprintf("agent thread %s: %s, want the process's %s", task, got, want))
			}
		}
		if len(odd) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, o := range odd {
		t.Error(o)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); string(b) != "sleep\x001000\x00" {
		t.Errorf("cmdline %q", b)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(string(b), ":/"+id+"\n") {
		t.Errorf("cgroup %q, want /%s", b, id)
	}
	for _, ns := range []string{"pid", "ipc", "uts"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		its, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if its == mine {
			t.Errorf("the holder shares this process's %s namespace", ns)
		}
	}
	// The holder's mount namespace holds its root alone: nothing above it
	// is reachable, even through /proc/PID/root/.. (which a container that
	// shares the pod's PID namespace could walk).
	up, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/..", pid))
	if err != nil || len(up) != 1 || up[0].Name() != "bin" {
		t.Errorf("/proc/%d/root/.. lists %v (%v), want the holder's root: bin", pid, up, err)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); strings.Count(string(b), "\n") != 1 {
		t.Errorf("the holder's mount table is not its root alone:\n%s", b)
	}
	var host, msgmax string
	onOwnThread(func() error {
		join := func(ns string, flag int) {
			fd, _ := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), unix.O_RDONLY, 0)
			unix.Setns(fd, flag)
			unix.Close(fd)
		}
		join("uts", unix.CLONE_NEWUTS)
		join("ipc", unix.CLONE_NEWIPC)
		host, _ = os.Hostname()
		b, _ := os.ReadFile("/proc/sys/kernel/msgmax")
		msgmax = strings.TrimSpace(string(b))
		return nil
	})
	if host != "podhost" || msgmax != "12345" {
		t.Errorf("in the holder's namespaces: hostname %q, kernel.msgmax %q; want podhost, 12345", host, msgmax)
	}
	if _, _, err := h.Run(nil); err == nil {
		t.Errorf("exec into a holder succeeded")
	}
	if err := h.Destroy(); err != nil {
		t.Errorf("destroy: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder's program outlived Destroy")
	}
	if left := cgroupsOf(id); len(left) > 0 {
		t.Errorf("the holder's cgroup is left: %v", left)
	}

	// A holder whose first step fails says why, and leaves nothing.
	plan.cwd = "/nonexistent"
	if h, err := startHolder(id, root, plan, cfg, r); err == nil || !strings.Contains(err.Error(), "chdir /nonexistent") {
		if h != nil {
			h.Destroy()
		}
		t.Errorf("a holder that cannot enter its cwd: %v", err)
	}
	if left := cgroupsOf(id); len(left) > 0 {
		t.Errorf("a failed holder's cgroup is left: %v", left)
	}
}

// cgroupsOf lists the cgroup directories named id: under cgroup v1 (this
// host's) one per hierarchy, under v2 (the guest's) one.
func cgroupsOf(id string) []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + id)
	if _, err := os.Stat("/sys/fs/cgroup/" + id); err == nil {
		dirs = append(dirs, "/sys/fs/cgroup/"+id)
	}
	return dirs
}
