package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/testbundle"
)

// rt runs one lodge-runtime command and returns stdout, stderr and the
// exit code.
func (f *fixture) rt(args ...string) result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Files, not pipes: a detached container keeps its stdio open, and a
	// pipe would make Run wait for the container to end.
	dir := f.t.TempDir()
	outF, _ := os.Create(filepath.Join(dir, "stdout"))
	errF, _ := os.Create(filepath.Join(dir, "stderr"))
	defer outF.Close()
	defer errF.Close()
	cmd := f.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = outF, errF
	err := cmd.Run()
	out, _ := os.ReadFile(outF.Name())
	errb, _ := os.ReadFile(errF.Name())
	r := result{stdout: string(out), stderr: string(errb)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("lodge-runtime %v: %v", args, err)
	}
	return r
}

func (f *fixture) mustRT(args ...string) string {
	f.t.Helper()
	r := f.rt(args...)
	if r.code != 0 {
		f.t.Fatalf("lodge-runtime %v: exit %d: %s", args, r.code, r.stderr)
	}
	return r.stdout
}

type ociState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
	Bundle string `json:"bundle"`
	// Annotations: the spec's, plus io.lodge.start (clone or cold) and
	// io.lodge.start.reason.
	Annotations map[string]string `json:"annotations"`
}

func (f *fixture) state(id string) ociState {
	f.t.Helper()
	var s ociState
	if err := json.Unmarshal([]byte(f.mustRT("state", id)), &s); err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fixture) waitStatus(id, want string) {
	f.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if s := f.state(id); s.Status == want {
			return
		} else if time.Now().After(deadline) {
			f.t.Fatalf("container %s is %s, waited for %s", id, s.Status, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLifecycle walks one container through runc's commands.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(t.TempDir(), "out")
	s := defaultSpec("sh", "-c", `echo started; trap 'echo got-term; exit 5' TERM; while :; do sleep 0.1; done`)
	quota, period := int64(50000), uint64(100000)
	s.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	cgPath := "/lodge-test-" + strconv.Itoa(os.Getpid())
	s.Linux.CgroupsPath = cgPath
	f.writeSpec(s)
	outFile, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := f.command(context.Background(), "create", "--bundle", f.bundle, "--pid-file", pidFile, "life")
	cmd.Stdout, cmd.Stderr = outFile, outFile
	if err := cmd.Run(); err != nil {
		t.Fatalf("create: %v", err)
	}

	st := f.state("life")
	pid, _ := os.ReadFile(pidFile)
	if st.Status != "created" || strconv.Itoa(st.Pid) != string(pid) || unix.Kill(st.Pid, 0) != nil {
		t.Fatalf("after create: state %+v, pid file %q", st, pid)
	}
	// The VM runs in the host cgroup the spec names, with the CPU quota.
	procs, quotaFile := hostCgroupFiles(cgPath)
	if b, err := os.ReadFile(quotaFile); err != nil || !strings.HasPrefix(string(b), "50000") {
		t.Errorf("host cgroup CPU quota %q (%v)", b, err)
	}
	if b, _ := os.ReadFile(procs); !strings.Contains("\n"+string(b), "\n"+strconv.Itoa(st.Pid)+"\n") {
		t.Errorf("supervisor %d not in host cgroup %s: %q", st.Pid, cgPath, b)
	}
	// Its memory is bounded by what the whole VM may take: the guest's 256
	// MiB and QEMU's own (256 MiB, or 1280 under TCG: translated code).
	if memMax := filepath.Join(filepath.Dir(procs), "memory.max"); !strings.Contains(procs, "/cpu/") {
		b, err := os.ReadFile(memMax)
		if got := strings.TrimSpace(string(b)); err != nil || got != strconv.Itoa((256+256)<<20) && got != strconv.Itoa((256+1280)<<20) {
			t.Errorf("host cgroup memory.max %q (%v), want the VM's RAM and QEMU's overhead", got, err)
		}
	}
	if r := f.rt("create", "--bundle", f.bundle, "life"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("duplicate create: exit %d, %q", r.code, r.stderr)
	}
	// As runc's: a created container takes an exec (its namespaces and
	// root are made), and its process is not started by it.
	if r := f.rt("exec", "life", "true"); r.code != 0 {
		t.Errorf("exec into a created container: exit %d, %s", r.code, r.stderr)
	}
	if st := f.state("life").Status; st != "created" {
		t.Errorf("after an exec, a created container is %s", st)
	}
	f.mustRT("start", "life")
	if f.state("life").Status != "running" {
		t.Fatal("not running after start")
	}
	if r := f.rt("start", "life"); r.code == 0 || !strings.Contains(r.stderr, "already running") {
		t.Errorf("second start: exit %d, %q", r.code, r.stderr)
	}

	r := f.rt("exec", "--env", "X=from-exec", "--cwd", "/tmp", "life", "sh", "-c", `echo "$X $(pwd)"; echo to-err >&2; exit 3`)
	if r.code != 3 || r.stdout != "from-exec /tmp\n" || r.stderr != "to-err\n" {
		t.Errorf("exec: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var pids []int
	if err := json.Unmarshal([]byte(f.mustRT("ps", "--format", "json", "life")), &pids); err != nil || len(pids) == 0 {
		t.Errorf("ps --format json: %v %v", pids, err)
	}

	f.mustRT("pause", "life")
	if s := f.state("life").Status; s != "paused" {
		t.Errorf("after pause: %s", s)
	}
	f.mustRT("resume", "life")
	if s := f.state("life").Status; s != "running" {
		t.Errorf("after resume: %s", s)
	}
	var ev struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Data struct {
			Memory struct {
				Usage struct {
					Usage uint64 `json:"usage"`
				} `json:"usage"`
			} `json:"memory"`
			Pids struct {
				Current uint64 `json:"current"`
			} `json:"pids"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(f.mustRT("events", "--stats", "life")), &ev); err != nil ||
		ev.Type != "stats" || ev.Data.Memory.Usage.Usage == 0 || ev.Data.Pids.Current == 0 {
		t.Errorf("events --stats: %+v, %v", ev, err)
	}
	f.mustRT("update", "--pids-limit", "50", "--memory", "100000000", "life")
	if err := json.Unmarshal([]byte(f.mustRT("events", "--stats", "life")), &ev); err != nil {
		t.Error(err)
	}

	if r := f.rt("delete", "life"); r.code == 0 || !strings.Contains(r.stderr, "not stopped") {
		t.Errorf("delete of a running container: exit %d, %q", r.code, r.stderr)
	}
	f.mustRT("kill", "life", "TERM")
	f.waitStatus("life", "stopped")
	if b, _ := os.ReadFile(out); string(b) != "started\ngot-term\n" {
		t.Errorf("container output %q", b)
	}
	if r := f.rt("kill", "life", "KILL"); r.code == 0 {
		t.Error("kill of a stopped container succeeded")
	}
	f.mustRT("delete", "life")
	if r := f.rt("state", "life"); r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
		t.Errorf("state after delete: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Dir(procs)); err == nil {
		t.Errorf("host cgroup %s left behind", cgPath)
	}
}

// hostCgroupFiles returns the host cgroup's process list and CPU quota
// files, for cgroup v1 (cpu controller) or v2.
func hostCgroupFiles(path string) (procs, quota string) {
	if _, err := os.Stat("/sys/fs/cgroup/cpu"); err == nil {
		return filepath.Join("/sys/fs/cgroup/cpu", path, "cgroup.procs"), filepath.Join("/sys/fs/cgroup/cpu", path, "cpu.cfs_quota_us")
	}
	return filepath.Join("/sys/fs/cgroup", path, "cgroup.procs"), filepath.Join("/sys/fs/cgroup", path, "cpu.max")
}

// TestDetachedExecAndForceDelete: run -d, exec -d with a pid file naming a
// host process that exits with the exec's status, then delete --force.
func TestDetachedExecAndForceDelete(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("sleep", "1000"))
	f.mustRT("run", "-d", "--bundle", f.bundle, "det")
	if s := f.state("det").Status; s != "running" {
		t.Fatalf("run -d: %s", s)
	}
	pidFile := filepath.Join(t.TempDir(), "exec.pid")
	f.mustRT("exec", "-d", "--pid-file", pidFile, "det", "sh", "-c", "sleep 1; exit 4")
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("exec pid file %q", b)
	}
	// Not our child: poll until it is gone (its status goes to its reaper).
	deadline := time.Now().Add(time.Minute)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("exec holder still alive")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := f.rt("exec", "-p", "/nonexistent/process.json", "det"); r.code == 0 {
		t.Error("exec with a missing process.json succeeded")
	}
	bad := filepath.Join(t.TempDir(), "process.json")
	os.WriteFile(bad, []byte(`{"args": [}`), 0o644)
	if r := f.rt("exec", "-p", bad, "det"); r.code == 0 || !strings.Contains(r.stderr, "not a valid process.json") {
		t.Errorf("malformed process.json: exit %d, %q", r.code, r.stderr)
	}
	f.mustRT("delete", "--force", "det")
	for _, args := range [][]string{{"state", "nope"}, {"start", "nope"}, {"kill", "nope"}, {"delete", "nope"}, {"exec", "nope", "true"}} {
		if r := f.rt(args...); r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
			t.Errorf("%v on an unknown id: exit %d, %q", args, r.code, r.stderr)
		}
	}
}

// TestTerminalMountsHooks: a terminal through --console-socket, a host
// directory bind-mounted read-only, and hooks run on the host.
func TestTerminalMountsHooks(t *testing.T) {
	f := newFixture(t)
	share := t.TempDir()
	os.WriteFile(filepath.Join(share, "greeting"), []byte("hello from the host\n"), 0o644)
	hookOut := t.TempDir()
	s := defaultSpec("sh", "-c", `cat /mnt/greeting; touch /mnt/x 2>/dev/null && echo mnt=rw || echo mnt=ro; tty; read line; echo "read:$line"; `+
		`trap "echo int-caught; exit 0" INT; echo waiting; while :; do sleep 0.2; done`)
	s.Process.Terminal = true
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/mnt", Type: "bind", Source: share, Options: []string{"rbind", "ro"}})
	hook := func(name string) specs.Hook {
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + filepath.Join(hookOut, name)}}
	}
	s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{hook("createRuntime")}, Poststart: []specs.Hook{hook("poststart")},
		Poststop: []specs.Hook{hook("poststop")}}
	f.writeSpec(s)

	sock, masterCh := consoleSocket(t)
	f.mustRT("create", "--bundle", f.bundle, "--console-socket", sock, "term")
	master := receiveMaster(t, masterCh)
	defer master.Close()
	var st specs.State
	b, _ := os.ReadFile(filepath.Join(hookOut, "createRuntime"))
	if err := json.Unmarshal(b, &st); err != nil || st.ID != "term" || st.Status != "created" {
		t.Errorf("createRuntime hook got %q (%v)", b, err)
	}
	f.mustRT("start", "term")
	master.Write([]byte("typed-line\n"))
	var got bytes.Buffer
	master.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "read:typed-line") {
		n, err := master.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	// A ^C is the guest terminal's to turn into SIGINT.
	for !strings.Contains(got.String(), "waiting") {
		n, err := master.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	master.Write([]byte{3})
	for !strings.Contains(got.String(), "int-caught") {
		n, err := master.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, want := range []string{"hello from the host", "mnt=ro", "/dev/pts/", "read:typed-line", "int-caught"} {
		if !strings.Contains(got.String(), want) {
			t.Errorf("terminal output lacks %q:\n%q", want, got.String())
		}
	}
	// The guest's terminal echoes the line once and ends lines in \r\n;
	// the host's, which only relays, adds nothing.
	if n := strings.Count(got.String(), "typed-line"); n != 2 || strings.Contains(got.String(), "\r\r\n") {
		t.Errorf("the host's terminal is not raw: %d echoes of the line (want the guest's one and the read's), output %q", n, got.String())
	}
	f.waitStatus("term", "stopped")
	if _, err := os.Stat(filepath.Join(hookOut, "poststart")); err != nil {
		t.Errorf("poststart hook did not run: %v", err)
	}
	f.mustRT("delete", "term")
	if _, err := os.Stat(filepath.Join(hookOut, "poststop")); err != nil {
		t.Errorf("poststop hook did not run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(share, "x")); err == nil {
		t.Error("the read-only mount was written")
	}
}

// consoleSocket listens on a console socket (--console-socket) and yields
// the terminal master the runtime sends there.
func consoleSocket(t *testing.T) (string, <-chan *os.File) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	masterCh := make(chan *os.File, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		fds, _ := unix.ParseUnixRights(&msgs[0])
		unix.SetNonblock(fds[0], true) // so that read deadlines hold
		masterCh <- os.NewFile(uintptr(fds[0]), "master")
	}()
	return sock, masterCh
}

func receiveMaster(t *testing.T, masterCh <-chan *os.File) *os.File {
	t.Helper()
	select {
	case master := <-masterCh:
		return master
	case <-time.After(10 * time.Second):
		t.Fatal("no terminal master on the console socket")
	}
	return nil
}

// TestSupervisorKilled: if the supervisor dies, the container reads as
// stopped and delete cleans everything (checked by the fixture).
func TestSupervisorKilled(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("sleep", "1000"))
	f.mustRT("run", "-d", "--bundle", f.bundle, "victim")
	st := f.state("victim")
	syscall.Kill(st.Pid, syscall.SIGKILL)
	f.waitStatus("victim", "stopped")
	f.mustRT("delete", "victim")
}

func TestSpecAndFeatures(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	f.mustRT("spec", "--bundle", dir)
	var s specs.Spec
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &s); err != nil || s.Process == nil || s.Process.Args[0] != "sh" || !s.Process.Terminal {
		t.Errorf("spec wrote %s (%v)", b, err)
	}
	if r := f.rt("spec", "--bundle", dir); r.code == 0 {
		t.Error("spec overwrote an existing config.json")
	}
	var feat struct {
		OCIVersionMax string `json:"ociVersionMax"`
	}
	if err := json.Unmarshal([]byte(f.mustRT("features")), &feat); err != nil || feat.OCIVersionMax == "" {
		t.Errorf("features: %+v %v", feat, err)
	}
	if v := f.mustRT("--version"); !strings.Contains(v, "lodge-runtime version") || !strings.Contains(v, "spec: ") {
		t.Errorf("--version: %q", v)
	}
}

// TestIDReuse: a container id can be used again as soon as delete returns,
// even if the supervisor was still tearing the VM down when the container
// was reported stopped.
func TestIDReuse(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("true"))
	for i := range 3 {
		f.mustRT("create", "--bundle", f.bundle, "again")
		f.mustRT("start", "again")
		f.waitStatus("again", "stopped")
		f.mustRT("delete", "again")
		if _, err := os.Stat(filepath.Join(f.root, "again")); err == nil {
			t.Fatalf("round %d: state directory still there after delete", i)
		}
	}
}

// TestLongRootAndID: a --root as deep as Docker's runtime root and an id as
// long as Docker's put every socket of the container (the supervisor's, the
// VM's) past the kernel's 108-byte limit for a unix socket
// path; create, start, exec, kill and delete still work and leave nothing.
func TestLongRootAndID(t *testing.T) {
	f := newFixture(t)
	f.root = filepath.Join(f.root, "runtime-runc", "moby", strings.Repeat("r", 40))
	id := strings.Repeat("0123456789abcdef", 4)
	if n := len(filepath.Join(f.root, id, "vm", "qmp.sock")); n <= 108 {
		t.Fatalf("socket path of %d bytes tests nothing", n)
	}
	f.writeSpec(defaultSpec("sleep", "1000"))
	f.mustRT("create", "--bundle", f.bundle, id)
	f.mustRT("start", id)
	if out := f.mustRT("exec", id, "echo", "exec-ok"); strings.TrimSpace(out) != "exec-ok" {
		t.Errorf("exec: %q", out)
	}
	f.mustRT("kill", id, "KILL")
	f.waitStatus(id, "stopped")
	f.mustRT("delete", id)
}

// TestGuestReapsOrphans: in a container that shares the guest's PID
// namespace, an exec leaves background children behind; when they exit,
// the guest's PID 1 (the agent) reaps them: no zombie is left in the guest.
func TestGuestReapsOrphans(t *testing.T) {
	f := newFixture(t)
	s := defaultSpec("sleep", "1000")
	s.Linux.Namespaces = s.Linux.Namespaces[1:] // drop the PID namespace
	f.writeSpec(s)
	f.mustRT("run", "-d", "--bundle", f.bundle, "orphans")
	defer f.rt("delete", "--force", "orphans")
	f.mustRT("exec", "orphans", "sh", "-c", "for i in 1 2 3; do sleep 0.5 & done; exit 0")
	// The guest's processes: running sleeps, and zombies.
	look := func() (sleeping int, zombies []string) {
		out := f.mustRT("exec", "orphans", "sh", "-c", `for f in /proc/[0-9]*/stat; do read l < $f && echo "$l"; done`)
		for _, l := range strings.Split(out, "\n") {
			i := strings.LastIndexByte(l, ')')
			if i < 0 {
				continue
			}
			state := strings.TrimSpace(l[i+1:])
			switch {
			case strings.HasPrefix(state, "Z"):
				zombies = append(zombies, l)
			case strings.Contains(l, "(sleep)"):
				sleeping++
			}
		}
		return sleeping, zombies
	}
	deadline := time.Now().Add(time.Minute)
	for {
		sleeping, zombies := look()
		// Once only the init sleeps, the orphans have exited: they must
		// be gone, not zombies (allow the reaper a moment).
		if sleeping == 1 && len(zombies) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %d sleep processes running (want the init only), zombies %q", sleeping, zombies)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// A container that floods stdout and stderr at once: both arrive whole, in
// order and each on its own stream (bench/stdio measures the same at 200
// and 50 MB, with throughput beside runc's).
func TestStdioUnderLoad(t *testing.T) {
	f := newFixture(t)
	const outN, errN = 24 << 20, 6 << 20
	f.writeSpec(defaultSpec("sh", "-c", testbundle.FloodScript("o123456789abcde", outN, "E123456789abcde", errN)))
	r := f.run("flood", "")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr starts %.200q", r.code, r.stderr)
	}
	if err := testbundle.CheckRepeated(strings.NewReader(r.stdout), "o123456789abcde", outN); err != nil {
		t.Errorf("stdout: %v", err)
	}
	if err := testbundle.CheckRepeated(strings.NewReader(r.stderr), "E123456789abcde", errN); err != nil {
		t.Errorf("stderr: %v", err)
	}
}

// A state root on a full disk: run fails and says so, and leaves nothing
// there (no container directory, mount or process).
func TestStateDiskFull(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("true"))
	full := filepath.Join(t.TempDir(), "full")
	os.Mkdir(full, 0o700)
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("mount a small tmpfs: %v", err)
	}
	defer unix.Unmount(full, unix.MNT_DETACH)
	filler, _ := os.Create(filepath.Join(full, "filler"))
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	filler.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(f.bin, "lodge-runtime"), "--root", full, "run", "--bundle", f.bundle, "nospace")
	cmd.Env = append(os.Environ(), f.env...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no space left on device") {
		t.Fatalf("run on a full state disk: %v, output %q: want a failure that says the disk is full", err, out)
	}
	ents, _ := os.ReadDir(full)
	for _, e := range ents {
		if e.Name() != "filler" {
			t.Errorf("left on the full disk: %s", e.Name())
		}
	}
	if procs := processesMentioning(full); len(procs) > 0 {
		t.Errorf("processes left: %v", procs)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if n := strings.Count(string(mi), full); n != 1 {
		t.Errorf("%d mounts mention %s, want its tmpfs alone", n, full)
	}
}

// A host without free memory for a new VM (here: every byte of it kept for
// the host by vmm.host_reserve_mib): the sandbox is refused with words that
// say so and what to do, nothing of it is left (the fixture checks), and a
// sandbox already running goes on.
func TestHostMemoryExhausted(t *testing.T) {
	f := newFixture(t)
	f.writeSpec(defaultSpec("sleep", "600"))
	f.mustRT("run", "-d", "--bundle", f.bundle, "running")
	defer f.mustRT("delete", "--force", "running")
	meminfo, _ := os.ReadFile("/proc/meminfo")
	var totalKB int
	fmt.Sscanf(string(meminfo), "MemTotal: %d kB", &totalKB)
	if totalKB == 0 {
		t.Fatalf("no MemTotal in %q", meminfo)
	}
	f.config(fmt.Sprintf("[vmm]\nhost_reserve_mib = %d\n", totalKB>>10))
	f.writeSpec(defaultSpec("true"))
	r := f.run("starved", "")
	if r.code == 0 || !strings.Contains(r.stderr, "not enough free memory on the host") || !strings.Contains(r.stderr, "host_reserve_mib") {
		t.Fatalf("exit %d, stderr %q: want a refusal that names the host's memory and the reserve", r.code, r.stderr)
	}
	if out := f.mustRT("exec", "running", "echo", "alive"); out != "alive\n" {
		t.Errorf("the running sandbox after the refusal: %q", out)
	}
}
