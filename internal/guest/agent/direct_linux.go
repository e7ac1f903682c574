package agent

// A direct container is a container the agent starts without libcontainer's
// `runc init`: the agent makes its cgroup, joins the namespaces it shares
// (a pod's network, IPC and UTS ones) on a thread of its own and starts,
// from there, its own binary in the container's new namespaces and cgroup
// (lodge-init: internal/guest/directinit), which sets the root and the process
// up as runc does and executes the program once the container is started.
// Under TCG, `runc init` costs ~200-500 ms of emulated code per container:
// nsexec's three stages, a Go program's start, libcontainer's sync round
// trips. A direct container pays one Go program's start and the system
// calls its setup needs.
//
// It serves the specs a pod's containers and most bundles have (see
// planDirect); a spec that asks for more (a user or time namespace, a
// mount namespace to join, sysctls, hooks, AppArmor or SELinux labels,
// scheduler or I/O priorities, a personality, a seccomp listener, mounts
// that copy up, are idmapped or recursively read-only) gets libcontainer,
// as before. A process exec'd into a direct container is started the same
// way, joining its namespaces and cgroup.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/guest/directinit"
)

// directNamespaces are the namespace types a direct container makes or
// joins, and their clone flags. A mount namespace is always its own.
var directNamespaces = map[configs.NamespaceType]uintptr{
	configs.NEWNS: unix.CLONE_NEWNS, configs.NEWPID: unix.CLONE_NEWPID, configs.NEWIPC: unix.CLONE_NEWIPC,
	configs.NEWUTS: unix.CLONE_NEWUTS, configs.NEWNET: unix.CLONE_NEWNET, configs.NEWCGROUP: unix.CLONE_NEWCGROUP,
}

// directMounts are the mount types a direct container makes.
var directMounts = map[string]bool{"bind": true, "proc": true, "sysfs": true, "tmpfs": true,
	"devpts": true, "mqueue": true, "cgroup": true}

// directPlan is how a direct container is started.
type directPlan struct {
	cloneflags uintptr
	joins      []nsJoin // namespaces joined by path
	init       directinit.Config
	// oomScore is the init's OOM score when the agent sets it, once the
	// first step is ready (asHolder: its root has no /proc).
	oomScore *int
}

// asHolder trims the plan of a pod's sandbox container to what a pod
// holder applies (holder_linux.go): its root is the image's layers alone
// and it gets no mounts, no /dev and so no masked or read-only paths
// (they are paths in those mounts), and the agent sets its OOM score, as
// for a holder. A sandbox container that a holder would serve but for its
// seccomp filter starts so: a direct container with the filter, without a
// full container's writable layer and mounts.
func (p *directPlan) asHolder() {
	in := &p.init
	in.Mounts, in.SetupDev, in.MaskPaths, in.ROPaths = nil, false, nil, nil
	p.oomScore, in.OOMScoreAdj = in.OOMScoreAdj, nil
}

type nsJoin struct {
	path string
	flag int
}

// planDirect returns the plan of a direct container for cfg (libcontainer's
// config of the spec) and its init lp, or why it needs libcontainer.
func planDirect(id string, cfg *configs.Config, lp *libcontainer.Process) (*directPlan, string) {
	switch {
	case len(cfg.Sysctl) > 0:
		return nil, "it sets sysctls"
	case cfg.AppArmorProfile != "" || cfg.ProcessLabel != "" || cfg.MountLabel != "" ||
		lp.AppArmorProfile != "" || lp.Label != "":
		return nil, "it asks for an AppArmor profile or an SELinux label"
	case cfg.Personality != nil || cfg.Scheduler != nil || cfg.IOPriority != nil || cfg.ExecCPUAffinity != nil ||
		cfg.MemoryPolicy != nil || lp.Scheduler != nil || lp.IOPriority != nil:
		return nil, "it asks for a personality, scheduler, I/O priority, CPU affinity or memory policy"
	case cfg.NoPivotRoot:
		return nil, "it asks for no pivot_root"
	case len(cfg.UIDMappings) > 0 || len(cfg.GIDMappings) > 0 || cfg.RootlessEUID || cfg.RootlessCgroups:
		return nil, "it maps users"
	case len(cfg.Routes) > 0 || len(cfg.TimeOffsets) > 0 || cfg.IntelRdt != nil:
		return nil, "it asks for routes, time offsets or Intel RDT"
	case cfg.Seccomp != nil && cfg.Seccomp.ListenerPath != "":
		return nil, "it asks for a seccomp listener"
	case len(cfg.Hooks) > 0:
		return nil, "it has hooks"
	}
	switch cfg.RootPropagation {
	case 0, unix.MS_SLAVE | unix.MS_REC, unix.MS_PRIVATE | unix.MS_REC:
	default:
		return nil, "it asks for a root propagation other than rslave or rprivate"
	}
	for _, n := range cfg.Networks {
		if n.Type != "loopback" {
			return nil, fmt.Sprintf("it asks for a %s network", n.Type)
		}
	}
	plan := &directPlan{}
	ownMountNS := false
	for _, ns := range cfg.Namespaces {
		flag, ok := directNamespaces[ns.Type]
		if !ok {
			return nil, fmt.Sprintf("it asks for a %s namespace", ns.Type)
		}
		switch {
		case ns.Path == "":
			plan.cloneflags |= flag
			ownMountNS = ownMountNS || ns.Type == configs.NEWNS
		case ns.Type == configs.NEWNS:
			return nil, "it joins a mount namespace"
		default:
			plan.joins = append(plan.joins, nsJoin{path: ns.Path, flag: int(flag)})
		}
	}
	if !ownMountNS {
		return nil, "it has no mount namespace of its own"
	}
	setupDev := true
	for _, m := range cfg.Mounts {
		switch {
		case !directMounts[m.Device]:
			return nil, fmt.Sprintf("it mounts a %s file system", m.Device)
		case m.Extensions != 0 || m.RecAttr != nil || m.IDMapping != nil:
			return nil, fmt.Sprintf("its mount on %s copies up, is idmapped or recursively read-only", m.Destination)
		case m.Device == "cgroup" && !cgroups.IsCgroup2UnifiedMode():
			return nil, "it mounts cgroups v1"
		case m.Device == "bind" && cleanPath(m.Destination) == "/dev":
			setupDev = false
		}
	}
	in := &plan.init
	in.ContainerID = id
	in.Root = cfg.Rootfs
	in.Mounts = cfg.Mounts
	in.Devices = cfg.Devices
	in.SetupDev = setupDev
	in.MaskPaths, in.ROPaths = cfg.MaskPaths, cfg.ReadonlyPaths
	in.Readonlyfs = cfg.Readonlyfs
	in.Propagation = cfg.RootPropagation
	in.Hostname, in.Domainname = cfg.Hostname, cfg.Domainname
	in.Loopback = len(cfg.Networks) > 0
	in.NoKeyring = cfg.NoNewKeyring
	in.Umask = cfg.Umask
	in.OOMScoreAdj = cfg.OomScoreAdj
	in.Seccomp = cfg.Seccomp
	setProcess(in, lp)
	return plan, ""
}

func cleanPath(p string) string { return filepath.Clean("/" + p) }

// setProcess sets in's process from lp (as newProcess made it).
func setProcess(in *directinit.Config, lp *libcontainer.Process) {
	in.Args, in.Env, in.Cwd = lp.Args, lp.Env, lp.Cwd
	in.UID, in.GID, in.Groups = lp.UID, lp.GID, lp.AdditionalGroups
	if in.Groups == nil {
		in.Groups = []int{}
	}
	in.Caps = lp.Capabilities
	in.NoNewPrivs = lp.NoNewPrivileges != nil && *lp.NoNewPrivileges
	in.Rlimits = lp.Rlimits
	in.ConsoleSizeW, in.ConsoleSizeH = lp.ConsoleWidth, lp.ConsoleHeight
}

// DirectArg, as the agent binary's first argument, makes it a direct
// container's first step (directinit.Main): where the guest has no
// lodge-init (Config.DirectInit), and in tests.
const DirectArg = "direct"

// direct is a direct container; it implements runner.
type direct struct {
	inCgroup
	exe  string // the first step's binary, "" for the agent's own
	id   string
	plan *directPlan

	mu      sync.Mutex // guards the rest
	init    *os.Process
	start   *os.File // the init's config pipe, until it is started
	report  *os.File // the init's report pipe, until it is started
	started bool
	// seccompCompiled is how long the init's seccomp profile took to
	// compile (0: compiled before, or none).
	seccompCompiled time.Duration
}

// newDirect makes a direct container's cgroup; exe is the first step's
// binary (lodge-init), "" for the agent's own.
func newDirect(exe, id string, cfg *configs.Config, plan *directPlan) (*direct, error) {
	cg, err := manager.New(cfg.Cgroups)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if err := cg.Apply(-1); err != nil {
		cg.Destroy() // what Apply made before it failed
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	d := &direct{inCgroup: inCgroup{cg: cg, devices: true, cfg: *cfg}, exe: exe, id: id, plan: plan}
	if err := cg.Set(cfg.Cgroups.Resources); err != nil {
		d.Destroy()
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return d, nil
}

// firstStepWait bounds how long a start waits for the first step to set
// the container up or to execute the program.
const firstStepWait = 30 * time.Second

// startInit starts the container's init and waits until it is set up and
// waits to be started. It is a start function of startProcess.
func (d *direct) startInit(lp *libcontainer.Process) (waitSignaller, int, error) {
	in := d.plan.init
	in.Console = lp.ConsoleSocket != nil
	// The init's profile is compiled here, so that its time is the
	// container's to report; startFirstStep finds it compiled.
	took, err := compiledSeccomp.forFirstStep(&in)
	if err != nil {
		return nil, 0, err
	}
	proc, start, report, err := d.startFirstStep(&in, lp, d.plan.cloneflags, d.plan.joins, nil)
	if err != nil {
		return nil, 0, err
	}
	b, err := readReport(report)
	if err == nil && (len(b) != 1 || b[0] != directinit.Ready) {
		err = firstStepError(b, proc.Pid)
	}
	if score := d.plan.oomScore; err == nil && score != nil {
		if err = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", proc.Pid), []byte(strconv.Itoa(*score)), 0); err != nil {
			err = fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	if err != nil {
		start.Close()
		report.Close()
		proc.Kill()
		proc.Wait()
		return nil, 0, err
	}
	d.mu.Lock()
	d.init, d.start, d.report, d.seccompCompiled = proc, start, report, took
	d.mu.Unlock()
	return proc, proc.Pid, nil
}

// readReport reads what the first step reports until it waits to be
// started or executes the program (EOF).
func readReport(report *os.File) ([]byte, error) {
	report.SetReadDeadline(time.Now().Add(firstStepWait))
	var b [1024]byte
	n, err := io.ReadAtLeast(report, b[:], 1)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wait for the container's first step: %w", err)
	}
	if b[0] == directinit.Ready && n == 1 {
		return b[:1], nil
	}
	// An error's text: the rest of it too.
	rest, _ := io.ReadAll(io.LimitReader(report, int64(len(b)-n)))
	return append(b[:n:n], rest...), nil
}

func firstStepError(b []byte, pid int) error {
	if len(b) == 0 {
		return fmt.Errorf("the container's first step (pid %d) exited before it was ready", pid)
	}
	return errors.New(string(b))
}

// warmFirstStep executes the first step's binary once as a warm first
// step (directinit.WarmArg) at idle priority (SCHED_IDLE, which the child
// takes from the thread that forks it), without waiting for it: the
// reaper reaps it. A pod's holder has no first step, so without this the
// pod's first container would be the first to run lodge-init's code in
// the clone, and under TCG its QEMU would translate it then, on that
// container's start; at idle priority the guest does it in the moments it
// waits for the host (the rest of the pod's start, the runtime's create).
// A container that starts meanwhile runs first and shares what is already
// translated. Under KVM it costs a few milliseconds of idle CPU.
func (cs *containers) warmFirstStep() {
	var pid int
	err := onOwnThread(func() error {
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			return fmt.Errorf("SCHED_IDLE: %w", err)
		}
		p, err := os.StartProcess(cs.directInit, []string{"lodge-init", directinit.WarmArg},
			&os.ProcAttr{Env: []string{}, Sys: &syscall.SysProcAttr{Setsid: true}})
		if err != nil {
			return err
		}
		pid = p.Pid
		return p.Release()
	})
	if err != nil {
		cs.log.Warn("warm first step", "error", err)
		return
	}
	cs.log.Info("warm first step", "pid", pid)
}

// startFirstStep starts DirectInit told in, with lp's stdio, in new
// namespaces (cloneflags) and joined ones, in the container's cgroup. mntns
// is the mount namespace an exec joins.
func (d *direct) startFirstStep(in *directinit.Config, lp *libcontainer.Process, cloneflags uintptr, joins []nsJoin,
	mntns *os.File) (_ *os.Process, start, report *os.File, retErr error) {
	if _, err := compiledSeccomp.forFirstStep(in); err != nil {
		return nil, nil, nil, err
	}
	cgdir, err := os.Open(d.cg.Path(""))
	if err != nil && cgroups.IsCgroup2UnifiedMode() {
		return nil, nil, nil, fmt.Errorf("cgroup: %w", err)
	}
	defer cgdir.Close()
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, j := range joins {
		fd, err := unix.Open(j.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("namespace %s: %w", j.path, err)
		}
		fds = append(fds, fd)
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	defer cfgR.Close()
	reportR, reportW, err := os.Pipe()
	if err != nil {
		cfgW.Close()
		return nil, nil, nil, err
	}
	defer reportW.Close()
	defer func() {
		if retErr != nil {
			cfgW.Close()
			reportR.Close()
		}
	}()
	extra := []*os.File{cfgR, reportW}
	if in.Console || mntns != nil {
		extra = append(extra, lp.ConsoleSocket) // nil: fd 5 closed
	}
	if mntns != nil {
		extra = append(extra, mntns)
	}
	cmd := &exec.Cmd{Path: d.exe, Args: []string{"lodge-init"}, Env: []string{},
		ExtraFiles:  extra,
		SysProcAttr: &syscall.SysProcAttr{Cloneflags: cloneflags, Setsid: true}}
	// With cgroup v2 (the guest's) the first step is born in the
	// container's cgroup; with v1 (hosts that run the unit tests) it joins
	// it before it is told anything.
	v2 := cgroups.IsCgroup2UnifiedMode()
	if v2 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cgdir.Fd())
	}
	if !in.Console {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = lp.Stdin, lp.Stdout, lp.Stderr
	}
	if d.exe == "" {
		cmd.Path, cmd.Args = "/proc/self/exe", []string{os.Args[0], DirectArg}
	}
	// The thread that joins the namespaces starts the first step, which
	// is born in them, and then ends.
	err = onOwnThread(func() error {
		for i, j := range joins {
			if err := unix.Setns(fds[i], j.flag); err != nil {
				return fmt.Errorf("join namespace %s: %w", j.path, err)
			}
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start the container's first step: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if !v2 {
		if err := d.cg.Apply(cmd.Process.Pid); err != nil {
			cmd.Process.Kill()
			cmd.Process.Wait()
			return nil, nil, nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	if err := json.NewEncoder(cfgW).Encode(in); err != nil {
		cmd.Process.Kill()
		cmd.Process.Wait()
		return nil, nil, nil, fmt.Errorf("configure the container's first step: %w", err)
	}
	return cmd.Process, cfgW, reportR, nil
}

// waitSignaller of a direct container's process.
var _ waitSignaller = (*os.Process)(nil)

func (d *direct) ID() string { return d.id }

// Exec starts the container: its init executes the program.
func (d *direct) Exec() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started || d.init == nil {
		return errors.New("container is not in the created state")
	}
	start, report := d.start, d.report
	d.start, d.report, d.started = nil, nil, true
	defer report.Close()
	_, err := start.Write([]byte{'S'})
	start.Close()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	b, err := readReport(report)
	if err == nil && len(b) > 0 {
		err = errors.New(string(b))
	}
	return err
}

// Run starts lp in the running container: it joins the init's
// namespaces and the container's cgroup.
func (d *direct) Run(lp *libcontainer.Process) (waitSignaller, int, error) {
	d.mu.Lock()
	init := d.init
	d.mu.Unlock()
	if init == nil {
		return nil, 0, errors.New("container has no init")
	}
	ns := func(name string) string { return fmt.Sprintf("/proc/%d/ns/%s", init.Pid, name) }
	joins := []nsJoin{{ns("pid"), unix.CLONE_NEWPID}, {ns("net"), unix.CLONE_NEWNET},
		{ns("ipc"), unix.CLONE_NEWIPC}, {ns("uts"), unix.CLONE_NEWUTS}, {ns("cgroup"), unix.CLONE_NEWCGROUP}}
	mntns, err := os.Open(ns("mnt"))
	if err != nil {
		return nil, 0, fmt.Errorf("the container's mount namespace: %w", err)
	}
	defer mntns.Close()
	// The init may have exited meanwhile: then its namespaces are gone
	// or another process's.
	if exited(init.Pid) {
		return nil, 0, libcontainer.ErrNotRunning
	}
	if lp.AppArmorProfile != "" || lp.Label != "" || lp.Scheduler != nil || lp.IOPriority != nil {
		return nil, 0, errors.New("a process with an AppArmor profile, an SELinux label, a scheduler or an I/O priority cannot join a direct container")
	}
	base := &d.plan.init
	in := directinit.Config{Exec: true, ContainerID: d.id, NoKeyring: base.NoKeyring, Umask: base.Umask,
		OOMScoreAdj: base.OOMScoreAdj, Seccomp: base.Seccomp}
	setProcess(&in, lp)
	// What the process does not set, it takes from the container's
	// config, as with libcontainer.
	if lp.Capabilities == nil {
		in.Caps = base.Caps
	}
	if lp.NoNewPrivileges == nil {
		in.NoNewPrivs = base.NoNewPrivs
	}
	if len(lp.Rlimits) == 0 {
		in.Rlimits = base.Rlimits
	}
	in.Console = lp.ConsoleSocket != nil
	proc, start, report, err := d.startFirstStep(&in, lp, 0, joins, mntns)
	if err != nil {
		return nil, 0, err
	}
	start.Close()
	defer report.Close()
	b, err := readReport(report)
	if err == nil && len(b) > 0 {
		err = errors.New(string(b))
	}
	if err != nil {
		proc.Kill()
		proc.Wait()
		return nil, 0, err
	}
	return proc, proc.Pid, nil
}

func (d *direct) Signal(s os.Signal) error {
	d.mu.Lock()
	init := d.init
	d.mu.Unlock()
	if init == nil {
		return libcontainer.ErrNotRunning
	}
	return init.Signal(s)
}

// Destroy kills what runs in the container's cgroup and removes it.
func (d *direct) Destroy() error {
	d.mu.Lock()
	if d.start != nil {
		d.start.Close()
		d.report.Close()
		d.start, d.report = nil, nil
	}
	init := d.init
	d.mu.Unlock()
	if init != nil {
		init.Signal(unix.SIGKILL)
	}
	return d.destroy()
}

// exited reports a child that has exited, without reaping it.
func exited(pid int) bool {
	var si unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && si.Signo != 0
}
