package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/pool"
)

// poolFixture is a templateFixture with a pool of size clones per
// template; whatever the pool holds at the end is drained, and nothing of
// it may be left.
func poolFixture(t *testing.T, size int) (*fixture, string) {
	t.Helper()
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "templates")
	f.config(poolConfig(t, dir, size))
	return f, dir
}

// poolConfig is a config with templates in dir and a pool of size clones
// in a host cgroup of the test's own; when the test ends the pool is
// drained, and neither its processes nor its cgroup may be left.
func poolConfig(t *testing.T, dir string, size int) string {
	cg := poolCgroup(t)
	t.Cleanup(func() {
		drainPools(t, dir, size)
		for _, d := range cgroupDirs(cg) {
			if os.Remove(d) != nil {
				t.Errorf("the pool's cgroup %s is left", d)
			}
		}
	})
	return fmt.Sprintf("[template]\ndir = %q\npool = %d\npool_cgroup = %q\n", dir, size, cg)
}

// poolCgroup is a host cgroup path of this test's own for its pool.
func poolCgroup(t *testing.T) string {
	return fmt.Sprintf("/lodgetest-pool-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
}

// cgroupDirs lists the directories of the host cgroup path cg in every
// hierarchy where it exists.
func cgroupDirs(cg string) []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(h, cg)); err == nil {
			dirs = append(dirs, filepath.Join(h, cg))
		}
	}
	return dirs
}

// cgroupHierarchies lists where the host's cgroup hierarchies are mounted.
func cgroupHierarchies() []string {
	var roots []string
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			roots = append(roots, f[1])
		}
	}
	return roots
}

// inCgroup says whether process pid is in the host cgroup cg in some
// hierarchy (a memory or unified one: where a clone's memory is counted).
func inCgroup(pid int, cg string) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[2] == cg &&
			(f[1] == "" || strings.Contains(","+f[1]+",", ",memory,")) {
			return true
		}
	}
	return false
}

// drainPools ends every pooled clone of the templates in dir (pools of
// size clones); nothing of them may be left.
func drainPools(t *testing.T, dir string, size int) {
	p := &pool.Pool{Dir: filepath.Join(dir, ".pool"), Size: size}
	keys, _ := os.ReadDir(p.Dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, k := range keys {
		p.Drain(ctx, k.Name())
	}
	waitGone(t, dir, 30*time.Second)
}

// waitPooled waits until a clone is offered in the pool below the
// templates' dir and returns its directory.
func waitPooled(t *testing.T, dir string, not ...string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		r, _ := filepath.Glob(filepath.Join(dir, ".pool", "*", "vm-*", "ready"))
		for _, f := range r {
			if !slices.Contains(not, filepath.Dir(f)) {
				return filepath.Dir(f)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	errs, _ := filepath.Glob(filepath.Join(dir, ".pool", "*", "last-error"))
	for _, e := range errs {
		b, _ := os.ReadFile(e)
		t.Logf("%s: %s", e, b)
	}
	t.Fatal("no clone was pooled within 3 minutes")
	return ""
}

// waitGone waits until no process mentions s (a pooled clone's QEMU names
// its directory; a keeper's directory holds its sockets).
func waitGone(t *testing.T, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(processesMentioning(s)) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("processes left behind: %v", processesMentioning(s))
}

// waitNoFile waits until p is gone.
func waitNoFile(t *testing.T, p, what string) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	var left []string
	filepath.WalkDir(p, func(f string, _ os.DirEntry, _ error) error {
		left = append(left, strings.TrimPrefix(f, p))
		return nil
	})
	log, _ := os.ReadFile(filepath.Join(p, pool.LogFile))
	t.Errorf("%s is left: %s, holding %q; its keeper's log:\n%s", what, p, left, log)
}

func (f *fixture) lodge(args ...string) result {
	f.t.Helper()
	cmd := exec.Command(filepath.Join(f.bin, "lodge"), args...)
	cmd.Env = append(os.Environ(), f.env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatal(err)
	}
	return result{stdout: string(out), code: code}
}

// The pool ([template] pool = 1): the first sandbox clones the template
// and has a keeper fill the pool; the next takes the pooled clone (state
// says so) and the pool fills again. Pooled clones are as much their own
// as restored ones: different RNG output, boot_id and machine id, and the
// host's clock although they waited stopped.
func TestPooledClones(t *testing.T) {
	f, dir := poolFixture(t, 1)
	if ann := f.startOf("first", nil, "sleep", "60"); ann["io.lodge.start"] != "clone" || ann["io.lodge.start.pooled"] != "" {
		t.Fatalf("first sandbox: %v, want a clone restored on demand", ann)
	}
	vm := waitPooled(t, dir)
	if ann := f.startOf("pooled", nil, "sleep", "60"); ann["io.lodge.start"] != "clone" || ann["io.lodge.start.pooled"] != "true" {
		t.Fatalf("second sandbox: %v, want the pooled clone", ann)
	}
	if _, err := os.Stat(filepath.Join(vm, "ready")); err == nil {
		t.Fatal("the pooled clone is still offered after a sandbox took it")
	}
	waitGone(t, vm, 30*time.Second) // its sandbox is deleted: its keeper ended it

	probe := `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; cat /proc/sys/kernel/random/boot_id
		cat /proc/1/root/etc/machine-id; date +%s`
	s := privilegedSpec("sh", "-c", probe)
	s.Linux.Namespaces = withoutNamespace(s.Linux.Namespaces, specs.PIDNamespace)
	f.writeSpec(s)
	type sample struct {
		lines  []string
		t0, t1 time.Time
	}
	read := func(id string) sample {
		vm := waitPooled(t, dir)
		time.Sleep(3 * time.Second) // the stopped clone's clock falls behind
		t0 := time.Now()
		r := f.run(id, "")
		t1 := time.Now()
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 4 {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", id, r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(vm, "ready")); err == nil {
			t.Fatalf("%s did not take the pooled clone", id)
		}
		return sample{lines, t0, t1}
	}
	a, b := read("pooled-a"), read("pooled-b")
	for i, what := range []string{"random bytes", "boot_id", "machine id"} {
		if a.lines[i] == b.lines[i] {
			t.Errorf("pooled clones share their %s: %s", what, a.lines[i])
		}
	}
	for _, s := range []sample{a, b} {
		c, err := strconv.ParseInt(s.lines[3], 10, 64)
		if err != nil || c < s.t0.Unix()-1 || c > s.t1.Unix()+1 {
			t.Errorf("pooled clone's clock %s, host's %d..%d: more than 1 s apart", s.lines[3], s.t0.Unix(), s.t1.Unix())
		}
	}
	waitPooled(t, dir)
	if r := f.lodge("template", "ls"); r.code != 0 || !strings.Contains(r.stdout, "POOLED") || !strings.Contains(r.stdout, "1/1") {
		t.Errorf("template ls with a full pool: exit %d\n%s", r.code, r.stdout)
	}
}

// A pooled clone ends with whoever holds it: the sandbox's supervisor
// killed, its keeper ends the VM and removes its directory; the keeper
// killed while the clone waits, the VM dies with it (Pdeathsig) and the
// next keeper sweeps its directory; `lodge template rm` drains the pool
// and is not refused for clones that are no sandbox's.
func TestPoolFaults(t *testing.T) {
	f, dir := poolFixture(t, 1)
	f.startOf("first", nil, "true")
	vm := waitPooled(t, dir)
	f.writeSpec(defaultSpec("sleep", "1000"))
	f.mustRT("run", "-d", "--bundle", f.bundle, "victim")
	st := f.state("victim")
	if st.Annotations["io.lodge.start.pooled"] != "true" {
		t.Fatalf("victim: %v, want the pooled clone", st.Annotations)
	}
	syscall.Kill(st.Pid, syscall.SIGKILL)
	waitGone(t, vm, 30*time.Second)
	waitNoFile(t, vm, "the directory of a clone whose sandbox died")
	f.waitStatus("victim", "stopped")
	f.mustRT("delete", "victim")

	vm = waitPooled(t, dir)
	b, err := os.ReadFile(filepath.Join(vm, pool.PIDFile))
	keeper, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || keeper < 2 {
		t.Fatalf("keeper pid: %q %v", b, err)
	}
	syscall.Kill(keeper, syscall.SIGKILL)
	waitGone(t, vm, 30*time.Second)
	if ann := f.startOf("after-keeper", nil, "true"); ann["io.lodge.start"] != "clone" || ann["io.lodge.start.pooled"] != "" {
		t.Fatalf("after the keeper died: %v, want a clone restored on demand", ann)
	}
	// The dead keeper's clone is still marked ready: the claim above found
	// nobody answering there, and it or the next keeper sweeps it.
	waitPooled(t, dir, vm)
	waitNoFile(t, vm, "a dead keeper's directory, after the next keeper")

	keys, _ := filepath.Glob(filepath.Join(dir, "*-*"))
	var key string
	for _, k := range keys {
		if fi, err := os.Stat(k); err == nil && fi.IsDir() && !strings.Contains(k, ".tmp-") {
			key = filepath.Base(k)
		}
	}
	if r := f.lodge("template", "rm", key); r.code != 0 {
		t.Fatalf("template rm with only a pooled clone: exit %d\n%s", r.code, r.stdout)
	}
	waitGone(t, dir, 30*time.Second)
}

// A pool of two fills to two after one sandbox: each keeper, once its
// clone is offered, starts the keeper of the next free slot. `lodge
// template ls` says so, and `lodge template drain` ends both clones
// (a drained keeper's successor finds no free slot), leaving nothing.
func TestPoolFillsToSize(t *testing.T) {
	f, dir := poolFixture(t, 2)
	f.startOf("first", nil, "true")
	deadline := time.Now().Add(3 * time.Minute)
	var ready []string
	for time.Now().Before(deadline) {
		if ready, _ = filepath.Glob(filepath.Join(dir, ".pool", "*", "vm-*", "ready")); len(ready) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(ready) != 2 {
		t.Fatalf("a pool of 2 holds %d clones after 3 minutes", len(ready))
	}
	if r := f.lodge("template", "ls"); r.code != 0 || !strings.Contains(r.stdout, "2/2") {
		t.Errorf("template ls with a full pool of 2: exit %d\n%s", r.code, r.stdout)
	}
	// Waiting clones, keepers and QEMUs, are counted in the pool's host
	// cgroup (template.pool_cgroup), where an operator can see and limit
	// them; `template drain` removes it with the last of them.
	cg := poolCgroup(t)
	for _, r := range ready {
		slot := filepath.Dir(r)
		b, _ := os.ReadFile(filepath.Join(slot, "keeper.pid"))
		keeper, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if keeper == 0 || !inCgroup(keeper, cg) {
			t.Errorf("the keeper %d of %s is not in the pool's cgroup %s", keeper, slot, cg)
		}
		qemus := 0
		for _, p := range processesMentioning(slot) {
			pid, _ := strconv.Atoi(strings.SplitN(p, ":", 2)[0])
			if strings.Contains(p, "qemu-system") {
				qemus++
				if !inCgroup(pid, cg) {
					t.Errorf("the pooled QEMU %d is not in the pool's cgroup %s", pid, cg)
				}
			}
		}
		if qemus == 0 {
			t.Errorf("no QEMU names the slot %s", slot)
		}
	}
	if len(cgroupDirs(cg)) == 0 {
		t.Errorf("no host cgroup %s while clones wait", cg)
	}
	if r := f.lodge("template", "drain"); r.code != 0 {
		t.Fatalf("template drain: exit %d\n%s", r.code, r.stdout)
	}
	if left := cgroupDirs(cg); len(left) != 0 {
		t.Errorf("the pool's cgroup is left after template drain: %v", left)
	}
	waitGone(t, filepath.Join(dir, ".pool"), 30*time.Second)
	time.Sleep(2 * time.Second) // a keeper a drained one started has tried its slot
	if left, _ := filepath.Glob(filepath.Join(dir, ".pool", "*", "vm-*")); len(left) != 0 {
		t.Errorf("after drain: %v", left)
	}
}
