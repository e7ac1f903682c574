package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/confine"
	"github.com/lodgeruntime/lodge/internal/host"

	"golang.org/x/sys/unix"
)

// hostProc is one host process that serves a sandbox, as /proc shows it.
type hostProc struct {
	pid    string
	comm   string
	status map[string]string
}

// servingProcs are the processes whose command line names root, by name.
func servingProcs(t *testing.T, root string) map[string]hostProc {
	t.Helper()
	out := map[string]hostProc{}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(root)) {
			continue
		}
		dir := filepath.Dir(p)
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		hp := hostProc{pid: filepath.Base(dir), comm: strings.TrimSpace(string(comm)), status: procStatus(filepath.Join(dir, "status"))}
		switch {
		case strings.HasPrefix(hp.comm, "qemu"):
			out["qemu"] = hp
		case strings.HasPrefix(hp.comm, "virtiofsd"): // none: QEMU serves every share
			out["virtiofsd"] = hp
		}
	}
	return out
}

func procStatus(path string) map[string]string {
	b, _ := os.ReadFile(path)
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func capMask(t *testing.T, hp hostProc, field string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(hp.status[field], 16, 64)
	if err != nil {
		t.Fatalf("%s %s: %s %q", hp.comm, hp.pid, field, hp.status[field])
	}
	return v
}

// The capabilities a confined process may hold, as /proc masks.
const (
	// CHOWN, DAC_OVERRIDE, FOWNER, FSETID: QEMU serving 9p, in a user
	// namespace of its own.
	caps9PMask = 1<<0 | 1<<1 | 1<<3 | 1<<4
)

// The host process that serves a guest, QEMU (its share too, over 9p:
// there is no virtiofsd), runs confined: with only 9p's file capabilities,
// in a user namespace of its own, with no way to gain any (no_new_privs),
// under a seccomp filter on every thread, without our environment and with
// no core dumps of guest memory. QEMU sees its own files and the system's
// /usr only. The state directories are the owner's alone.
func TestHostProcessPosture(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		start string
	}{
		{"clone"},
		{"cold"}, // QEMU serves a cold boot's share over 9p too
	} {
		t.Run(tc.start, func(t *testing.T) {
			id := "posture-" + tc.start
			f.runDetachedAs(tc.start, id, "sleep", "60")
			afterDelete := func() {}
			defer func() {
				f.mustRT("delete", "--force", id)
				afterDelete()
			}()
			f.checkStartedAs(id, tc.start)
			if st, err := os.Stat(filepath.Join(f.root, id)); err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("the container's state directory: %v %v, want mode 0700", st.Mode(), err)
			}
			procs := servingProcs(t, filepath.Join(f.root, id))
			q, ok := procs["qemu"]
			if !ok {
				t.Fatalf("no QEMU process for %s: %v", id, procs)
			}
			// Its capabilities: 9p's as ambient ones
			// (its permitted and effective sets are exactly those), held in
			// a user namespace of its own (none in the host's), which maps
			// the ids below the range kept for QEMUs as themselves and its
			// own user, and no other QEMU's. There it is not root, and the
			// bounding set is the namespace's full one (the kernel's for a
			// new namespace), which no_new_privs keeps it from ever gaining.
			prm, eff, amb, bnd := capMask(t, q, "CapPrm"), capMask(t, q, "CapEff"), capMask(t, q, "CapAmb"), capMask(t, q, "CapBnd")
			if prm != caps9PMask || eff != caps9PMask || amb != caps9PMask {
				t.Errorf("QEMU: CapPrm %#x CapEff %#x CapAmb %#x CapBnd %#x, want %#x", prm, eff, amb, bnd, uint64(caps9PMask))
			}
			mine, _ := os.Readlink("/proc/self/ns/user")
			theirs, _ := os.Readlink("/proc/" + q.pid + "/ns/user")
			uidMap, _ := os.ReadFile("/proc/" + q.pid + "/uid_map")
			gidMap, _ := os.ReadFile("/proc/" + q.pid + "/gid_map")
			first := config.DefaultQEMUUIDFirst
			wantMap := fmt.Sprintf("0 0 %d %d %s 1", first, first, strings.Fields(q.status["Uid"])[0])
			switch {
			case theirs == mine || strings.Join(strings.Fields(string(uidMap)), " ") != wantMap ||
				strings.Join(strings.Fields(string(gidMap)), " ") != wantMap:
				t.Errorf("QEMU: user namespace %s (the host's: %s), uid_map %q, gid_map %q, want one of its own mapping %q",
					theirs, mine, uidMap, gidMap, wantMap)
			default:
				// Owned by QEMU's user, not root: the kernel gives the owner's
				// processes every capability in it.
				if owner, err := userNSOwner("/proc/" + q.pid + "/ns/user"); err != nil || fmt.Sprint(owner) != strings.Fields(q.status["Uid"])[0] {
					t.Errorf("QEMU's user namespace is owned by uid %d (%v), want QEMU's own", owner, err)
				}
			}
			if q.status["NoNewPrivs"] != "1" {
				t.Errorf("QEMU: NoNewPrivs %q", q.status["NoNewPrivs"])
			}
			// A user and group of its own, in the range kept for QEMUs, held
			// by a lease while it runs.
			uids, gids := strings.Fields(q.status["Uid"]), strings.Fields(q.status["Gid"])
			if len(uids) != 4 || len(gids) != 4 {
				t.Fatalf("QEMU: Uid %q Gid %q", q.status["Uid"], q.status["Gid"])
			}
			uid, _ := strconv.Atoi(uids[0])
			switch {
			case uid < config.DefaultQEMUUIDFirst || uid >= config.DefaultQEMUUIDFirst+65536 ||
				strings.Count(q.status["Uid"]+" "+q.status["Gid"], uids[0]) != 8 || q.status["Groups"] != "":
				t.Errorf("QEMU: Uid %q Gid %q Groups %q, want one id of its own from %d on, no other group",
					q.status["Uid"], q.status["Gid"], q.status["Groups"], config.DefaultQEMUUIDFirst)
			default:
				if _, err := os.Stat(filepath.Join(host.UIDLeaseDir, uids[0])); err != nil {
					t.Errorf("no lease for QEMU's uid %d: %v", uid, err)
				}
				afterDelete = func() {
					if _, err := os.Stat(filepath.Join(host.UIDLeaseDir, uids[0])); err == nil {
						t.Errorf("the lease of uid %d outlived its QEMU", uid)
					}
				}
			}
			// No environment of ours; a clone's QEMU has the library that
			// keeps its template's memory read-only, and the file's name.
			env, err := os.ReadFile("/proc/" + q.pid + "/environ")
			vars := strings.Split(strings.TrimSuffix(string(env), "\x00"), "\x00")
			switch {
			case err != nil:
				t.Errorf("QEMU's environment: %v", err)
			case tc.start == "cold" && len(env) != 0:
				t.Errorf("QEMU's environment: %q, want empty", env)
			case tc.start == "clone" && (len(vars) != 2 || !strings.HasPrefix(vars[0], "LD_PRELOAD=") ||
				!strings.HasSuffix(vars[0], "/lodge-qemu-rofile.so") || !strings.HasPrefix(vars[1], "LODGE_RO_FILE=")):
				t.Errorf("QEMU's environment: %q, want the read-only memory library and file only", vars)
			case tc.start == "clone":
				templateMemoryReadOnly(t, q.pid, strings.TrimPrefix(vars[1], "LODGE_RO_FILE="))
			}
			lim, _ := os.ReadFile("/proc/" + q.pid + "/limits")
			for name, want := range map[string]string{"Max core file size": "0", "Max open files": "16384", "Max processes": "1024"} {
				if v, ok := limitOf(string(lim), name); !ok || v != want {
					t.Errorf("QEMU: %s %q, want %s:\n%s", name, v, want, lim)
				}
			}
			allThreadsFiltered(t, q)
			// Its own file system: a mount namespace of its own in which
			// the host's /etc, /root, /var/log, /sys and this sandbox's state (but
			// its console log) do not exist.
			for _, ns := range []string{"mnt", "pid", "net", "ipc"} {
				mine, _ := os.Readlink("/proc/self/ns/" + ns)
				if theirs, _ := os.Readlink("/proc/" + q.pid + "/ns/" + ns); theirs == mine {
					t.Errorf("QEMU shares the host's %s namespace (%s)", ns, mine)
				}
			}
			// Its network namespace is empty: a loopback, down.
			if dev, _ := os.ReadFile("/proc/" + q.pid + "/net/dev"); strings.Count(string(dev), ":") != 1 || !strings.Contains(string(dev), "lo:") {
				t.Errorf("QEMU's network namespace has interfaces:\n%s", dev)
			}
			qroot := "/proc/" + q.pid + "/root"
			for _, hidden := range []string{"/etc/passwd", "/etc/shadow", "/root", "/var/log", "/sys", "/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", filepath.Join(f.root, id, "state.json")} {
				if _, err := os.Lstat(qroot + hidden); err == nil {
					t.Errorf("QEMU sees the host's %s", hidden)
				}
			}
			// Another process of uid 0 without capabilities cannot reach
			// into this one: QEMU is non-dumpable, and holds capabilities
			// the probe lacks.
			unreachable(t, "QEMU", q.pid)
			// It is alone in a PID namespace of its own (it can signal no
			// other process), and its /proc shows a process without
			// capabilities only what it could trace: no host process, no
			// other sandbox's QEMU.
			if ns := strings.Fields(q.status["NSpid"]); len(ns) < 2 || ns[len(ns)-1] != "1" {
				t.Errorf("QEMU: NSpid %q, want the first process of a PID namespace of its own", q.status["NSpid"])
			}
			if seen := procSeenInside(t, q.pid); len(seen) != 1 {
				t.Errorf("a process in QEMU's mount namespace sees processes %v, want only itself", seen)
			}
			if logs, _ := filepath.Glob(qroot + filepath.Join(f.root, id, "*", "console.log")); len(logs) != 1 {
				t.Errorf("QEMU sees console logs %v, want its own", logs)
			}

			if v, ok := procs["virtiofsd"]; ok {
				t.Errorf("a virtiofsd (pid %s) serves the sandbox", v.pid)
			}
		})
	}
}

// templateMemoryReadOnly fails unless the clone's QEMU (pid) holds its
// template's memory file open for reading only, from a read-only mount:
// it cannot write what the other clones map.
func templateMemoryReadOnly(t *testing.T, pid, memory string) {
	t.Helper()
	fds, _ := filepath.Glob("/proc/" + pid + "/fd/*")
	found := false
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); target != memory {
			continue
		}
		found = true
		info, _ := os.ReadFile("/proc/" + pid + "/fdinfo/" + filepath.Base(fd))
		var flags uint64
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				flags, _ = strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags&unix.O_ACCMODE != unix.O_RDONLY {
			t.Errorf("QEMU holds its template's memory %s open with flags %#o, want read-only", memory, flags)
		}
	}
	if !found {
		t.Errorf("QEMU holds no descriptor of its template's memory %s", memory)
	}
	mi, _ := os.ReadFile("/proc/" + pid + "/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == memory && !strings.HasPrefix(f[5], "ro") {
			t.Errorf("QEMU's mount of its template's memory is %s, want read-only", f[5])
		}
	}
}

// unreachable fails if another process of uid 0 without capabilities (as
// another sandbox's QEMU is) can read pid's environment, memory map or
// root through /proc: the process is non-dumpable.
func unreachable(t *testing.T, name, pid string) {
	t.Helper()
	for _, file := range []string{"environ", "maps", "root/"} {
		probe := exec.Command("/bin/ls", "-d", "/proc/"+pid+"/"+file)
		if file != "root/" {
			probe = exec.Command("/bin/cat", "/proc/"+pid+"/"+file)
		}
		probe.Stdout, probe.Stderr = io.Discard, io.Discard
		wait, err := confine.Start(probe, func() error { return confine.DropCaps(nil) })
		if err != nil {
			t.Fatal(err)
		}
		if err := <-wait; err == nil {
			t.Errorf("a uid-0 process without capabilities reads %s's /proc/%s/%s", name, pid, file)
		}
	}
}

// procSeenInside lists the processes that /proc shows to a process of uid
// 0 without capabilities (as QEMU is) in the mount namespace of pid.
func procSeenInside(t *testing.T, pid string) []string {
	t.Helper()
	var out bytes.Buffer
	ls := exec.Command("/bin/ls", "/proc")
	ls.Stdout = &out
	wait, err := confine.Start(ls, func() error {
		ns, err := os.Open("/proc/" + pid + "/ns/mnt")
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return err
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			return err
		}
		return confine.DropCaps(nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-wait; err != nil {
		t.Fatalf("ls /proc in QEMU's mount namespace: %v", err)
	}
	var pids []string
	for _, name := range strings.Fields(out.String()) {
		if _, err := strconv.Atoi(name); err == nil {
			comm, _ := os.ReadFile("/proc/" + name + "/comm")
			pids = append(pids, name+" "+strings.TrimSpace(string(comm)))
		}
	}
	return pids
}

// allThreadsFiltered fails unless every thread of hp runs a seccomp filter.
func allThreadsFiltered(t *testing.T, hp hostProc) {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/" + hp.pid + "/task/*/status")
	if len(tasks) == 0 {
		t.Fatalf("%s %s: no threads", hp.comm, hp.pid)
	}
	for _, st := range tasks {
		if m := procStatus(st)["Seccomp"]; m != "2" {
			t.Errorf("%s thread %s: Seccomp %q, want 2 (filter)", hp.comm, filepath.Base(filepath.Dir(st)), m)
		}
	}
}

// limitOf reads one limit of a /proc/PID/limits text: its value when the
// soft and hard limits agree.
func limitOf(limits, name string) (string, bool) {
	for _, l := range strings.Split(limits, "\n") {
		if strings.HasPrefix(l, name) {
			f := strings.Fields(strings.TrimPrefix(l, name))
			return f[0], len(f) >= 2 && f[0] == f[1]
		}
	}
	return "", false
}

// `lodge check` on this host: ready, with the confinement it measured on a
// process started as QEMU is.
func TestLodgeCheck(t *testing.T) {
	l := newLodgeCLI(t)
	out := l.must("check")
	if !strings.Contains(out, "\nready\n") {
		t.Fatalf("check is not ready:\n%s", out)
	}
	for _, want := range []string{"accelerator:", "templates:", "their memory read-only to clones", "seccomp:     compiled on the host by", "confinement: QEMU under Lodge's seccomp filter", "no other host process serves a guest"} {
		if !strings.Contains(out, want) {
			t.Errorf("check does not say %q:\n%s", want, out)
		}
	}
}

// A host process that serves a sandbox killed with SIGKILL: the container's
// `lodge-runtime run` ends with a non-zero status and says why, and nothing
// of the sandbox is left (the fixture checks). QEMU is the one host process
// that serves a guest, its files included.
func TestServingProcessKilled(t *testing.T) {
	for _, tc := range []struct {
		start, victim, why string
		annotations        map[string]string
	}{
		{"clone", "qemu", "the VM exited", nil},
		{"cold", "qemu", "the VM exited", map[string]string{"io.lodge.template": "false"}},
	} {
		t.Run(tc.start, func(t *testing.T) {
			f := newFixture(t)
			s := defaultSpec("sh", "-c", "echo up; sleep 600")
			s.Annotations = tc.annotations
			f.writeSpec(s)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := f.command(ctx, "run", "--bundle", f.bundle, "victim")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "up\n" {
				t.Fatalf("container did not start: %q %v; stderr %s", line, err, stderr.String())
			}
			p, ok := servingProcs(t, filepath.Join(f.root, "victim"))[tc.victim]
			if !ok {
				t.Fatalf("no %s for the sandbox", tc.victim)
			}
			pid, _ := strconv.Atoi(p.pid)
			killed := time.Now()
			syscall.Kill(pid, syscall.SIGKILL)
			err := cmd.Wait()
			t.Logf("lodge-runtime run ended %v after the kill", time.Since(killed).Round(10*time.Millisecond))
			if err == nil || !strings.Contains(stderr.String(), tc.why) {
				t.Errorf("run: %v, stderr:\n%s\nwant a failure that says %q", err, stderr.String(), tc.why)
			}
		})
	}
}

// userNSOwner is the uid that owns the user namespace at path
// (NS_GET_OWNER_UID).
func userNSOwner(path string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	const nsGetOwnerUID = 0xb704 // _IO(0xb7, 0x4)
	var uid uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), nsGetOwnerUID, uintptr(unsafe.Pointer(&uid))); e != 0 {
		return 0, e
	}
	return uid, nil
}
