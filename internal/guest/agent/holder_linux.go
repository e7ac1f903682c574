package agent

// A pod holder is how the agent makes a pod's sandbox container (the
// "pause" container CRI creates first): the pause program, started by the
// agent itself in the pod's new namespaces and the sandbox's cgroup, from
// a thread that first makes the sandbox image's root the only mount of a
// mount namespace of its own (enterHolderRoot). The pod's other containers
// join its namespaces as they would a full container's. A full container
// costs a libcontainer `runc init`, which under TCG takes about half a
// second; a holder is one exec, of the pause program.
//
// A holder applies what a pause program can be affected by: namespaces,
// hostname, IPC sysctls, user and groups, the capability bounding set,
// no_new_privs, rlimits, the OOM score and the cgroup's resources. A spec
// that asks for more (a seccomp filter, a user namespace, a namespace
// path, a terminal or stdio, other sysctls, a program that gains
// privileges when executed) gets a full container, as before; one whose
// only obstacle is its seccomp filter gets a direct container trimmed to a
// holder's plan (holdsButForSeccomp, directPlan.asHolder).

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
)

// holderPlan is what a holder takes from its spec.
type holderPlan struct {
	cloneflags uintptr // the pod's new namespaces
	path       string  // the program, as a path inside the root
	args, env  []string
	cwd        string
	cred       *syscall.Credential
	hostname   string
	domainname string
	sysctls    map[string]string // IPC sysctls, set in the new IPC namespace
	bounding   []string          // capability names, as in the spec
	noNewPrivs bool
	oomScore   *int
	rlimits    []specs.POSIXRlimit
}

// holderNamespaces are the namespace types a holder makes; a pod's other
// containers join the IPC, UTS and PID ones.
var holderNamespaces = map[specs.LinuxNamespaceType]uintptr{
	specs.IPCNamespace: unix.CLONE_NEWIPC, specs.UTSNamespace: unix.CLONE_NEWUTS,
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.CgroupNamespace: unix.CLONE_NEWCGROUP,
	// A holder always gets a mount namespace of its own, in which
	// enterHolderRoot detaches the agent's mounts.
	specs.MountNamespace: 0,
}

// ipcSysctls are the sysctls that belong to an IPC namespace.
var ipcSysctls = []string{"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
	"kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue."}

// planHolder returns the plan for a holder of spec, whose root is rootfs,
// or why the spec needs a full container.
func planHolder(spec *specs.Spec, rootfs string, stdio *agentv1.Stdio) (*holderPlan, string) {
	p := spec.Process
	if stdio != nil && (stdio.Stdin || stdio.Stdout || stdio.Stderr || stdio.Terminal) || p.Terminal {
		return nil, "it has stdio or a terminal"
	}
	plan := &holderPlan{args: p.Args, env: append([]string{}, p.Env...), cwd: p.Cwd,
		cred:     &syscall.Credential{Uid: p.User.UID, Gid: p.User.GID, Groups: p.User.AdditionalGids},
		hostname: spec.Hostname, domainname: spec.Domainname, sysctls: map[string]string{},
		noNewPrivs: p.NoNewPrivileges, oomScore: p.OOMScoreAdj,
		rlimits: p.Rlimits}
	if plan.cwd == "" {
		plan.cwd = "/"
	}
	if l := spec.Linux; l != nil {
		if l.Seccomp != nil {
			return nil, "it asks for a seccomp filter"
		}
		for _, ns := range l.Namespaces {
			flag, ok := holderNamespaces[ns.Type]
			if !ok || ns.Path != "" {
				return nil, fmt.Sprintf("it asks for %s namespace %q", ns.Type, ns.Path)
			}
			plan.cloneflags |= flag
		}
		for k, v := range l.Sysctl {
			if !isIPCSysctl(k) || plan.cloneflags&unix.CLONE_NEWIPC == 0 {
				return nil, fmt.Sprintf("it sets sysctl %s", k)
			}
			plan.sysctls[k] = v
		}
	}
	if (plan.hostname != "" || plan.domainname != "") && plan.cloneflags&unix.CLONE_NEWUTS == 0 {
		return nil, "it names a host without a UTS namespace of its own"
	}
	if c := p.Capabilities; c != nil {
		// libcontainer would ignore an unknown one; a holder refuses it.
		known := capabilities.KnownCapabilities()
		for _, name := range c.Bounding {
			if !slices.Contains(known, name) {
				return nil, fmt.Sprintf("it keeps unknown capability %s", name)
			}
		}
		plan.bounding = c.Bounding
	}
	prog, why := findProgram(rootfs, p.Args[0], p.Env)
	if prog == "" {
		return nil, why
	}
	plan.path = prog
	return plan, ""
}

// holdsButForSeccomp says whether a holder would serve spec but for its
// seccomp filter, which a holder cannot apply: the filter must be loaded
// after the program's user is set and before it executes, and a holder's
// program is executed straight from the agent's fork (containers_linux.go
// then starts it as a direct container trimmed to a holder's plan,
// directPlan.asHolder).
func holdsButForSeccomp(spec *specs.Spec, rootfs string, stdio *agentv1.Stdio) bool {
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		return false
	}
	without := *spec
	l := *spec.Linux
	l.Seccomp = nil
	without.Linux = &l
	p, _ := planHolder(&without, rootfs, stdio)
	return p != nil
}

func isIPCSysctl(k string) bool {
	for _, s := range ipcSysctls {
		if k == s || strings.HasSuffix(s, ".") && strings.HasPrefix(k, s) {
			return true
		}
	}
	return false
}

// findProgram resolves arg0 inside rootfs as the container's PATH would
// and returns it as a path inside the root, or "" and why not: a holder
// runs only a regular file that gains nothing when executed (no setuid,
// setgid or file capabilities).
func findProgram(rootfs, arg0 string, env []string) (string, string) {
	var candidates []string
	if strings.Contains(arg0, "/") {
		candidates = []string{path.Join("/", arg0)}
	} else {
		search := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, "PATH="); ok {
				search = v
			}
		}
		for _, dir := range filepath.SplitList(search) {
			candidates = append(candidates, path.Join("/", dir, arg0))
		}
	}
	for _, c := range candidates {
		host, err := securejoin.SecureJoin(rootfs, c)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(host, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o111 == 0 {
			continue
		}
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return "", fmt.Sprintf("its program %s is setuid or setgid", c)
		}
		if _, err := unix.Lgetxattr(host, "security.capability", nil); err == nil {
			return "", fmt.Sprintf("its program %s has file capabilities", c)
		}
		rel, err := filepath.Rel(rootfs, host)
		if err != nil {
			continue
		}
		return "/" + rel, ""
	}
	return "", fmt.Sprintf("its program %q is not an executable file in its root", arg0)
}

// holder is a pod holder; it implements runner.
type holder struct {
	inCgroup
	id   string
	proc *os.Process
}

// startHolder makes the holder's cgroup, starts its program and sets the
// new namespaces up. On error nothing it made is left.
func startHolder(id, rootfs string, plan *holderPlan, cfg *configs.Config, r *reaper) (_ *holder, retErr error) {
	cgc := *cfg.Cgroups
	cgc.Resources = withoutDevices(cgc.Resources)
	cg, err := manager.New(&cgc)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if err := cg.Apply(-1); err != nil {
		cg.Destroy() // what Apply made before it failed
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	h := &holder{id: id, inCgroup: inCgroup{cg: cg, cfg: *cfg}}
	defer func() {
		if retErr != nil {
			h.Destroy()
		}
	}()
	if err := cg.Set(cgc.Resources); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	// The holder's program is started from a thread of the agent's own
	// that first makes the holder's mount namespace, root, bounding set and
	// no_new_privs its own (all of them the thread's, inherited by the
	// child), then ends (enterHolderRoot).
	attr := &syscall.SysProcAttr{Cloneflags: plan.cloneflags, Setsid: true,
		Credential: plan.cred}
	// With cgroup v2 (the guest's) the program starts in its cgroup, which
	// is then the root of its cgroup namespace; with v1 (some hosts that
	// run the unit tests) it joins it once started.
	v2 := cgroups.IsCgroup2UnifiedMode()
	if v2 {
		dir, err := os.Open(cg.Path(""))
		if err != nil {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
		defer dir.Close()
		attr.UseCgroupFD, attr.CgroupFD = true, int(dir.Fd())
	}
	// The program's stdio is /dev/null, opened here: the holder's root
	// has no /dev.
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	caps, err := capabilities.New(&configs.Capabilities{Bounding: plan.bounding})
	if err != nil {
		return nil, fmt.Errorf("capabilities: %w", err)
	}
	started := r.starting()
	err = onOwnThread(func() error {
		if err := plan.enterHolderRoot(rootfs, caps); err != nil {
			return err
		}
		p, err := os.StartProcess(plan.path, plan.args, &os.ProcAttr{Env: plan.env,
			Files: []*os.File{null, null, null}, Sys: attr})
		if err != nil {
			return fmt.Errorf("start its program %s: %w", plan.path, err)
		}
		h.proc = p
		return nil
	})
	if err != nil {
		started(0)
		return nil, err
	}
	started(h.proc.Pid)
	// Joining its namespaces changes a thread for good.
	err = onOwnThread(func() error { return plan.setNamespaces(h.proc.Pid) })
	if err == nil && !v2 {
		err = cg.Apply(h.proc.Pid)
	}
	if err == nil {
		err = plan.setProcess(h.proc.Pid)
	}
	if err != nil {
		h.proc.Kill()
		h.proc.Wait()
		r.waited(h.proc.Pid)
		return nil, err
	}
	return h, nil
}

// enterHolderRoot gives the calling thread, which must be one of its own
// (onOwnThread), a mount namespace whose only mount is rootfs as its root
// (pivot_root, the agent's mounts detached), so that nothing of the
// agent's mounts is reachable from the holder, not even through
// /proc/PID/root/.. by a container that shares its PID namespace; then
// the working directory, the bounding set and no_new_privs of the plan.
// The program started from the thread inherits them all; its user and
// groups are set in it before it executes (SysProcAttr.Credential).
func (p *holderPlan) enterHolderRoot(rootfs string, caps *capabilities.Caps) error {
	steps := []struct {
		what string
		do   func() error
	}{
		// CLONE_NEWNS unshares the thread's root and working directory too.
		{"new mount namespace", func() error { return unix.Unshare(unix.CLONE_NEWNS) }},
		{"make mounts private", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"bind the root", func() error { return unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, "") }},
		{"enter the root", func() error { return unix.Chdir(rootfs) }},
		{"pivot_root", func() error { return unix.PivotRoot(".", ".") }},
		{"detach the old root", func() error { return unix.Unmount(".", unix.MNT_DETACH) }},
		{"chdir " + p.cwd, func() error { return unix.Chdir(p.cwd) }},
		{"bounding set", caps.ApplyBoundingSet},
		{"no_new_privs", func() error {
			if !p.noNewPrivs {
				return nil
			}
			return unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
		}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			return fmt.Errorf("holder: %s: %w", st.what, err)
		}
	}
	return nil
}

// withoutDevices is a copy of r that leaves device rules alone: a holder
// has no /dev, so it needs no device filter.
func withoutDevices(r *cgroups.Resources) *cgroups.Resources {
	c := *r
	c.SkipDevices, c.Devices = true, nil
	return &c
}

// onOwnThread runs f on a thread of its own that ends with it: f may
// change the thread's credentials or namespaces for good. The process's
// main thread must be its main goroutine's (lodge-agent locks it in init):
// the Go runtime parks a locked main thread instead of ending it, and what
// f did to it would then be what /proc/self shows.
func onOwnThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- f()
	}()
	return <-errc
}

// setNamespaces names the host and sets the IPC sysctls in pid's new
// namespaces; the calling thread joins them.
func (p *holderPlan) setNamespaces(pid int) error {
	join := func(ns string, flag int) error {
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Setns(fd, flag)
	}
	if p.hostname != "" || p.domainname != "" {
		if err := join("uts", unix.CLONE_NEWUTS); err != nil {
			return fmt.Errorf("join UTS namespace: %w", err)
		}
		if p.hostname != "" {
			if err := unix.Sethostname([]byte(p.hostname)); err != nil {
				return fmt.Errorf("hostname %q: %w", p.hostname, err)
			}
		}
		if p.domainname != "" {
			if err := unix.Setdomainname([]byte(p.domainname)); err != nil {
				return fmt.Errorf("domainname %q: %w", p.domainname, err)
			}
		}
	}
	if len(p.sysctls) > 0 {
		if err := join("ipc", unix.CLONE_NEWIPC); err != nil {
			return fmt.Errorf("join IPC namespace: %w", err)
		}
		for k, v := range p.sysctls {
			f := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
			if err := os.WriteFile(f, []byte(v), 0); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
			}
		}
	}
	return nil
}

// setProcess sets the holder's rlimits and OOM score.
func (p *holderPlan) setProcess(pid int) error {
	for _, rl := range p.rlimits {
		res, ok := rlimits[rl.Type]
		if !ok {
			return fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		if err := unix.Prlimit(pid, res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
			return fmt.Errorf("rlimit %s: %w", rl.Type, err)
		}
	}
	if p.oomScore != nil {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(fmt.Sprint(*p.oomScore)), 0); err != nil {
			return fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	return nil
}

// errHolderExec: a holder runs its pause program and nothing else.
var errHolderExec = errors.New("the pod's sandbox container runs only its pause program: exec into it is not supported")

func (h *holder) ID() string { return h.id }

// Exec does nothing: the pause program runs from Create on.
func (h *holder) Exec() error { return nil }
func (h *holder) Run(*libcontainer.Process) (waitSignaller, int, error) {
	return nil, 0, errHolderExec
}
func (h *holder) Signal(s os.Signal) error { return h.proc.Signal(s) }

// Destroy kills what runs in the holder's cgroup and removes it.
func (h *holder) Destroy() error {
	if h.proc != nil {
		h.proc.Signal(unix.SIGKILL)
	}
	return h.destroy()
}

// inCgroup is what a container the agent started itself (a holder, a
// direct container) does through its cgroup: the rest of runner.
type inCgroup struct {
	cg      cgroups.Manager
	devices bool // Set applies device rules (a holder has no /dev)

	mu  sync.Mutex // guards cfg
	cfg configs.Config
}

func (c *inCgroup) Processes() ([]int, error) { return c.cg.GetAllPids() }
func (c *inCgroup) Pause() error              { return c.cg.Freeze(cgroups.Frozen) }
func (c *inCgroup) Resume() error             { return c.cg.Freeze(cgroups.Thawed) }

func (c *inCgroup) Stats() (*libcontainer.Stats, error) {
	st, err := c.cg.GetStats()
	return &libcontainer.Stats{CgroupStats: st}, err
}

func (c *inCgroup) Config() configs.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

func (c *inCgroup) Set(cfg configs.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := cfg.Cgroups.Resources
	if !c.devices {
		res = withoutDevices(res)
	}
	if err := c.cg.Set(res); err != nil {
		return err
	}
	c.cfg = cfg
	return nil
}

// destroy kills what runs in the cgroup and removes it.
func (c *inCgroup) destroy() error {
	if pids, err := c.cg.GetAllPids(); err == nil {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	return c.cg.Destroy()
}
