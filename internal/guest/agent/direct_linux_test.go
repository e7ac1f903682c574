package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	_ "github.com/opencontainers/cgroups/devices" // device rules, as lodge-agent has them
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // the test binary is libcontainer's runc init too
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// directProbe prints what a container's process sees of itself: identity,
// capabilities, seccomp and no_new_privs, environment, limits, mounts,
// /dev, host name and loopback; one line per fact, in a stable order.
const directProbe = `
echo pid=$$; id; pwd; umask; hostname
grep -E '^(Cap|NoNewPrivs|Seccomp:|Groups)' /proc/self/status
env | grep -v '^PWD=' | sort
grep -E 'open files|processes' /proc/self/limits
cat /proc/self/oom_score_adj
cat /sys/class/net/lo/flags 2>&1
for f in /dev/* /dev/pts/ptmx /dev/shm /dev/mqueue; do stat -c '%n %F %a %u %g %t %T' $f; done | sort
awk '{ s=$0; sub(/.* - /, "", s); split(s, b, " "); print $5, $6, b[1], b[3] }' /proc/self/mountinfo | sort
ls /
hostname other 2>&1; echo sethostname=$?
`

// directSpec is a container's spec that asks for most of what a direct
// container serves.
func directSpec(t *testing.T, root string) *specs.Spec {
	t.Helper()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n"), 0o644)
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "file"), []byte("hello\n"), 0o644)
	spec := oci.DefaultSpec()
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/bin/busybox", "sh", "-c", directProbe}
	spec.Process.Env = []string{"PATH=/bin", "A=1", "A=2", "HOME="}
	spec.Process.Cwd = "/work/sub"
	spec.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{5, 7}}
	spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 2000, Soft: 1000}}
	adj := 123
	spec.Process.OOMScoreAdj = &adj
	spec.Process.NoNewPrivileges = true
	c := []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: c, Effective: c[1:2], Permitted: c[1:2], Ambient: c[1:2], Inheritable: c[1:2]}
	umask := uint32(0o027)
	spec.Process.User.Umask = &umask
	spec.Hostname = "directhost"
	spec.Root = &specs.Root{Path: root}
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		if m.Type == "cgroup" && !cgroups.IsCgroup2UnifiedMode() {
			continue // libcontainer and a direct container both serve v2 only the same way
		}
		mounts = append(mounts, m)
	}
	spec.Mounts = append(mounts,
		specs.Mount{Destination: "/etc/extra", Type: "bind", Source: filepath.Join(data, "file"), Options: []string{"rbind", "ro"}},
		specs.Mount{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "rw", "nosuid"}},
		specs.Mount{Destination: "/ro-tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"ro", "size=1m"}},
	)
	if withSeccomp {
		spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow,
			Syscalls: []specs.LinuxSyscall{{Names: []string{"sethostname"}, Action: specs.ActErrno}}}
	}
	return spec
}

// specConfig is libcontainer's config and init of spec, as the agent
// makes them, with the cgroup named id.
func specConfig(t *testing.T, spec *specs.Spec, id string) (*configs.Config, *libcontainer.Process) {
	t.Helper()
	spec.Linux.CgroupsPath = "/" + id
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: id, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	lp, err := newProcess(spec.Process)
	if err != nil {
		t.Fatal(err)
	}
	lp.Init = true
	return cfg, lp
}

// testDirect makes the direct container of spec (its cgroup), destroyed
// when the test ends.
func testDirect(t *testing.T, spec *specs.Spec, id string) (*direct, *libcontainer.Process) {
	t.Helper()
	cfg, lp := specConfig(t, spec, id)
	plan, why := planDirect(id, cfg, lp)
	if plan == nil {
		t.Fatalf("not a direct container: %s", why)
	}
	d, err := newDirect("", id, cfg, plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Destroy() })
	return d, lp
}

// run runs spec's process through libcontainer or as a direct container
// and returns its output; exec, if not empty, is run in the container
// while its init sleeps, instead.
func runSpec(t *testing.T, spec *specs.Spec, id string, direct bool, execArgs []string) string {
	t.Helper()
	r, w, _ := os.Pipe()
	defer r.Close()
	var rn runner
	var proc waitSignaller
	if direct {
		d, lp := testDirect(t, spec, id)
		lp.Stdout, lp.Stderr = w, w
		rn = d
		var err error
		if proc, _, err = d.startInit(lp); err != nil {
			t.Fatalf("direct init: %v", err)
		}
	} else {
		cfg, lp := specConfig(t, spec, id)
		lp.Stdout, lp.Stderr = w, w
		lc, err := libcontainer.Create(t.TempDir(), id, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rn = lcContainer{lc}
		if err := lc.Start(lp); err != nil {
			lc.Destroy()
			t.Fatalf("libcontainer start: %v", err)
		}
		proc = lp
	}
	defer func() {
		rn.Destroy()
		proc.Wait()
		if left := cgroupsOf(id); len(left) > 0 {
			t.Errorf("cgroup left: %v", left)
		}
	}()
	if err := rn.Exec(); err != nil {
		w.Close()
		t.Fatalf("start: %v", err)
	}
	if len(execArgs) > 0 {
		w.Close()
		xr, xw, _ := os.Pipe()
		defer xr.Close()
		xp := *spec.Process
		xp.Args = execArgs
		xp.Cwd = "/"
		xlp, err := newProcess(&xp)
		if err != nil {
			t.Fatal(err)
		}
		xlp.Stdout, xlp.Stderr = xw, xw
		xproc, _, err := rn.Run(xlp)
		xw.Close()
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
		out, _ := io.ReadAll(xr)
		xproc.Wait()
		return string(out)
	}
	w.Close()
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); done <- b }()
	select {
	case out := <-done:
		return string(out)
	case <-time.After(30 * time.Second):
		t.Fatal("the container's program did not finish")
	}
	return ""
}

// A direct container's process sees what libcontainer's would of the same
// spec: user, groups, capabilities, no_new_privs, seccomp, environment
// (HOME from the root's passwd, duplicates dropped), working directory
// (made), umask, rlimits, OOM score, mounts with their options (masked and
// read-only paths, read-only binds and tmpfs), /dev's nodes and links, the
// host name, loopback up in a new network namespace; and so does a process
// exec'd into it.
func TestDirectMatchesLibcontainer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	// Each run has a root of its own: a run makes mount points in it.
	id := fmt.Sprintf("direct-test-%d", os.Getpid())
	want := runSpec(t, directSpec(t, pauseRoot(t)), id+"-lc", false, nil)
	got := runSpec(t, directSpec(t, pauseRoot(t)), id+"-d", true, nil)
	if !strings.Contains(want, "uid=1000") || withSeccomp != strings.Contains(want, "Seccomp:\t2") {
		t.Fatalf("libcontainer's container did not run the probe:\n%s", want)
	}
	if got != want {
		t.Errorf("a direct container differs from libcontainer's:\n%s", lineDiff(want, got))
	}

	probe := []string{"/bin/busybox", "sh", "-c", directProbe}
	sleeper := func() *specs.Spec {
		s := directSpec(t, pauseRoot(t))
		s.Process.Args = []string{"/bin/busybox", "sleep", "100"}
		return s
	}
	want = runSpec(t, sleeper(), id+"-lcx", false, probe)
	got = runSpec(t, sleeper(), id+"-dx", true, probe)
	if !strings.Contains(want, "uid=1000") {
		t.Fatalf("libcontainer's exec did not run the probe:\n%s", want)
	}
	// libcontainer's nsexec stages take PIDs in the container's namespace
	// before the exec'd process's; a direct exec's takes the next one.
	pid := regexp.MustCompile(`(?m)^pid=\d+$`)
	want, got = pid.ReplaceAllString(want, "pid=N"), pid.ReplaceAllString(got, "pid=N")
	if got != want {
		t.Errorf("an exec into a direct container differs from libcontainer's:\n%s", lineDiff(want, got))
	}
}

// lineDiff lists the lines only one of a and b has.
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "libcontainer only: "+l)
		case n < 0:
			out = append(out, "direct only:       "+l)
		}
	}
	return strings.Join(out, "\n")
}

// A direct container waits to be started; one whose program is missing,
// or whose init is destroyed before its start, leaves no process or cgroup.
func TestDirectCreatedAndFailures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	root := pauseRoot(t)
	id := fmt.Sprintf("direct-fail-%d", os.Getpid())
	mk := func(args ...string) (*direct, *libcontainer.Process) {
		spec := directSpec(t, root)
		spec.Process.Args = args
		return testDirect(t, spec, id)
	}

	d, lp := mk("/bin/nonexistent")
	if _, _, err := d.startInit(lp); err == nil || !strings.Contains(err.Error(), "/bin/nonexistent") {
		t.Errorf("a missing program: %v", err)
	}
	d.Destroy()
	if left := cgroupsOf(id); len(left) > 0 {
		t.Errorf("cgroup left after a failed create: %v", left)
	}

	marker := filepath.Join(root, "started")
	d, lp = mk("/bin/busybox", "touch", "/started")
	proc, pid, err := d.startInit(lp)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Error("the program ran before the container was started")
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(string(b), "/"+id+"\n") {
		t.Errorf("created container's init is not in its cgroup: %s", b)
	}
	if err := d.Destroy(); err != nil {
		t.Errorf("destroy: %v", err)
	}
	proc.Wait()
	if _, err := os.Stat(marker); err == nil {
		t.Error("the program of a container destroyed unstarted ran")
	}
	if left := cgroupsOf(id); len(left) > 0 {
		t.Errorf("cgroup left after destroying a created container: %v", left)
	}
}

// An image cannot point a direct container's mounts at procfs files (the
// forms of CVE-2025-31133 and CVE-2025-52881 an image carries): a /dev/null
// that is a symlink, or a /proc that is one, is refused with runc's words
// and leaves nothing.
func TestDirectRefusesPlantedTargets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tc := range []struct {
		name  string
		plant func(root string) error
		want  string
	}{
		{"dev-null-symlink", func(root string) error {
			os.MkdirAll(filepath.Join(root, "dev"), 0o755)
			return os.Symlink("/proc/sys/kernel/core_pattern", filepath.Join(root, "dev", "null"))
		}, "container's /dev/null is invalid"},
		{"proc-symlink", func(root string) error {
			os.Mkdir(filepath.Join(root, "fake-proc"), 0o755)
			return os.Symlink("/fake-proc", filepath.Join(root, "proc"))
		}, "must be mounted on ordinary directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := pauseRoot(t)
			if err := tc.plant(root); err != nil {
				t.Fatal(err)
			}
			spec := directSpec(t, root)
			// Without a /dev of its own the container's /dev is the image's.
			var mounts []specs.Mount
			for _, m := range spec.Mounts {
				if !strings.HasPrefix(m.Destination, "/dev") {
					mounts = append(mounts, m)
				}
			}
			spec.Mounts = mounts
			id := fmt.Sprintf("direct-plant-%d", os.Getpid())
			d, lp := testDirect(t, spec, id)
			_, _, err := d.startInit(lp)
			d.Destroy()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("start: %v, want it refused with %q", err, tc.want)
			}
			if b, _ := os.ReadFile("/proc/sys/kernel/core_pattern"); strings.Contains(string(b), "evil") {
				t.Errorf("core_pattern changed: %s", b)
			}
			if left := cgroupsOf(id); len(left) > 0 {
				t.Errorf("cgroup left: %v", left)
			}
		})
	}
}

// The specs the agent sees most (a pod's container, joining the holder's
// namespaces; a bundle's default spec) are direct containers; a spec that
// asks for what lodge-init does not do gets libcontainer, with the reason.
func TestPlanDirect(t *testing.T) {
	root := t.TempDir()
	plan := func(edit func(*specs.Spec)) (*directPlan, string) {
		spec := directSpec(t, root)
		edit(spec)
		cfg, lp := specConfig(t, spec, "plan-test")
		return planDirect("plan-test", cfg, lp)
	}
	podContainer := func(s *specs.Spec) {
		s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace},
			{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"},
			{Type: specs.UTSNamespace, Path: "/proc/1/ns/uts"}}
		s.Hostname = ""
	}
	if p, why := plan(podContainer); p == nil {
		t.Errorf("a pod's container needs libcontainer: %s", why)
	} else if len(p.joins) != 2 || p.cloneflags != unix.CLONE_NEWNS|unix.CLONE_NEWPID {
		t.Errorf("a pod's container: joins %v, clone flags %#x", p.joins, p.cloneflags)
	}
	if p, why := plan(func(*specs.Spec) {}); p == nil {
		t.Errorf("the default spec needs libcontainer: %s", why)
	}
	for want, edit := range map[string]func(*specs.Spec){
		"sysctls": func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"kernel.msgmax": "1"} },
		"maps users": func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
			s.Linux.UIDMappings = []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}
			s.Linux.GIDMappings = []specs.LinuxIDMapping{{HostID: 100000, Size: 65536}}
		},
		"joins a mount namespace": func(s *specs.Spec) {
			for i, ns := range s.Linux.Namespaces {
				if ns.Type == specs.MountNamespace {
					s.Linux.Namespaces[i].Path = "/proc/1/ns/mnt"
				}
			}
		},
		"AppArmor": func(s *specs.Spec) { s.Process.ApparmorProfile = "p" },
	} {
		if p, why := plan(edit); p != nil || !strings.Contains(why, want) {
			t.Errorf("a spec with %s: plan %v, why %q", want, p != nil, why)
		}
	}
}
