package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// templateFixture is a fixture whose templates live in a directory of its
// own, so that the test sees (and times) every build.
func templateFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "templates")
	f.config("[template]\ndir = \"" + dir + "\"\n")
	return f, dir
}

// startOf runs a detached container with args and returns its state
// annotations once it runs, then removes it.
func (f *fixture) startOf(id string, annotations map[string]string, args ...string) map[string]string {
	f.t.Helper()
	s := defaultSpec(args...)
	s.Annotations = annotations
	f.writeSpec(s)
	f.mustRT("run", "-d", "--bundle", f.bundle, id)
	ann := f.state(id).Annotations
	f.mustRT("delete", "--force", id)
	return ann
}

// runDetachedAs runs a detached container of args that starts as a clone
// ("clone") or, opted out of templates, as a cold boot ("cold"); the
// caller deletes it.
func (f *fixture) runDetachedAs(start, id string, args ...string) {
	f.t.Helper()
	s := defaultSpec(args...)
	if start == "cold" {
		s.Annotations = map[string]string{"io.lodge.template": "false"}
	}
	f.writeSpec(s)
	f.mustRT("run", "-d", "--bundle", f.bundle, id)
}

// checkStartedAs fails the test unless id's sandbox started as start.
func (f *fixture) checkStartedAs(id, start string) {
	f.t.Helper()
	if got := f.state(id).Annotations["io.lodge.start"]; got != start {
		f.t.Fatalf("%s started as %q, want %q", id, got, start)
	}
}

func templateDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// The first sandbox of a shape builds its template, later ones start as
// clones of it; state says which; a clone's writes never reach the
// template's memory; io.lodge.template=false cold-boots and says why.
func TestTemplateClones(t *testing.T) {
	f, dir := templateFixture(t)
	if ann := f.startOf("first", nil, "sleep", "60"); ann["io.lodge.start"] != "clone" {
		t.Fatalf("first sandbox: %v, want a clone of a template built on demand", ann)
	}
	tpls := templateDirs(t, dir)
	if len(tpls) != 1 {
		t.Fatalf("templates after the first start: %v", tpls)
	}
	mem := filepath.Join(tpls[0], "memory")
	before := fileSum(t, mem)
	if st, err := os.Stat(mem); err != nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("template memory: %v %v, want mode 0400", st.Mode(), err)
	}

	// A clone that writes much of its memory: the template's stays as it was.
	f.writeSpec(defaultSpec("sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null; echo filled"))
	if r := f.run("writer", ""); r.code != 0 || !strings.Contains(r.stdout, "filled") {
		t.Fatalf("writer: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if after := fileSum(t, mem); after != before {
		t.Fatal("a clone's writes reached the template's memory file")
	}
	if ann := f.startOf("second", nil, "sleep", "60"); ann["io.lodge.start"] != "clone" || ann["io.lodge.template.key"] != filepath.Base(tpls[0]) {
		t.Fatalf("second sandbox: %v, want a clone of %s", ann, filepath.Base(tpls[0]))
	}
	if n := len(templateDirs(t, dir)); n != 1 {
		t.Fatalf("%d templates, want the one", n)
	}

	ann := f.startOf("optout", map[string]string{"io.lodge.template": "false"}, "sleep", "60")
	if ann["io.lodge.start"] != "cold" || !strings.Contains(ann["io.lodge.start.reason"], "io.lodge.template=false") {
		t.Fatalf("opted out: %v, want a cold boot that names the annotation", ann)
	}
	s := defaultSpec("true")
	s.Annotations = map[string]string{"io.lodge.template": "maybe"}
	f.writeSpec(s)
	if r := f.run("badann", ""); r.code == 0 || !strings.Contains(r.stderr, "io.lodge.template") {
		t.Fatalf("bad annotation: exit %d, stderr %q", r.code, r.stderr)
	}
}

// Two clones of one template do not share an identity: different RNG
// output, boot_id and machine id (the guest's, which only the host's
// Identify writes; read from the guest's root through PID 1), and the
// host's wall clock (the template was saved seconds before). RNG output
// alone could differ without the reseed (TCG offers RDRAND); the machine id
// and the clock cannot. Nor do they share the kernel's network secrets,
// which the kernel draws once, at their first use (net_get_random_once:
// TCP sequence numbers and timestamps, IP ids, source ports): the template
// must make no connection before its snapshot, or every clone's kernel
// would keep its draws, and a tenant that read them from its own guest
// could predict another's. The first source ports of two connections to
// fixed addresses (net_secret, table_perturb) show it: equal in clones that
// kept the template's draws, 1 in ~2e8 otherwise. (Each connection is read
// from whichever end is still listed: after the close only the end that
// closed first is, in TIME_WAIT, and which one that is varies.)
func TestCloneSafety(t *testing.T) {
	f, _ := templateFixture(t)
	probe := `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; cat /proc/sys/kernel/random/boot_id
		cat /proc/1/root/etc/machine-id; date +%s
		for p in 5000 5001; do nc -l -p $p >/dev/null & done
		for p in 5000 5001; do
			until netstat -ltn | grep -q ":$p "; do sleep 0.05; done
			echo | nc 127.0.0.1 $p
		done
		netstat -tn | awk '{ if ($4 ~ /:500[01]$/) { k = $4; o = $5 } else if ($5 ~ /:500[01]$/) { k = $5; o = $4 } else next
			n = split(k, a, ":"); m = split(o, b, ":"); port[a[n]] = b[m] }
			END { printf "%s %s", port[5000], port[5001] }'`
	s := privilegedSpec("sh", "-c", probe)
	s.Linux.Namespaces = withoutNamespace(s.Linux.Namespaces, specs.PIDNamespace)
	f.writeSpec(s)
	type sample struct {
		random, bootID, machineID string
		clock                     int64
		t0, t1                    time.Time
		ports                     []string
	}
	read := func(id string) sample {
		t0 := time.Now()
		r := f.run(id, "")
		t1 := time.Now()
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 5 {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", id, r.code, r.stdout, r.stderr)
		}
		c, err := strconv.ParseInt(lines[3], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ports := strings.Fields(lines[4])
		if len(ports) != 2 {
			t.Fatalf("%s: source ports %q, want two", id, lines[4])
		}
		return sample{lines[0], lines[1], lines[2], c, t0, t1, ports}
	}
	read("builds-template")
	time.Sleep(3 * time.Second) // the template's clock falls behind
	a, b := read("clone-a"), read("clone-b")
	if a.random == b.random || len(a.random) != 64 {
		t.Errorf("clones drew the same random bytes: %s", a.random)
	}
	if a.bootID == b.bootID {
		t.Errorf("clones share boot_id %s", a.bootID)
	}
	if slices.Equal(a.ports, b.ports) {
		t.Errorf("clones' kernels chose the same TCP source ports %v: they kept network secrets the template drew before its snapshot", a.ports)
	}
	if a.machineID == b.machineID || len(a.machineID) != 32 {
		t.Errorf("clones' machine ids %q, %q: want two of 32 hex digits", a.machineID, b.machineID)
	}
	for _, s := range []sample{a, b} {
		if s.clock < s.t0.Unix()-1 || s.clock > s.t1.Unix()+1 {
			t.Errorf("clone clock %d, host clock %d..%d: more than 1 s apart", s.clock, s.t0.Unix(), s.t1.Unix())
		}
	}
}

// A damaged template (a truncated memory file) is found, rebuilt and used.
func TestDamagedTemplateRebuilt(t *testing.T) {
	f, dir := templateFixture(t)
	f.startOf("first", nil, "true")
	tpls := templateDirs(t, dir)
	if len(tpls) != 1 {
		t.Fatalf("templates: %v", tpls)
	}
	var meta struct{ Built time.Time }
	readMeta := func() {
		b, err := os.ReadFile(filepath.Join(tpls[0], "meta.json"))
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(b, &meta)
	}
	readMeta()
	built := meta.Built
	if err := os.Truncate(filepath.Join(tpls[0], "memory"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if ann := f.startOf("after-damage", nil, "true"); ann["io.lodge.start"] != "clone" {
		t.Fatalf("after the damage: %v", ann)
	}
	readMeta()
	if !meta.Built.After(built) {
		t.Fatal("the damaged template was not rebuilt")
	}
}

// kill -9 of the process building a template leaves no half template, no
// VM and no lock held: the next sandbox builds it and starts as a clone.
func TestTemplateBuilderKilled(t *testing.T) {
	f, dir := templateFixture(t)
	f.writeSpec(defaultSpec("true"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	create := f.command(ctx, "create", "--bundle", f.bundle, "victim")
	if err := create.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the build to be under way, then kill its builder (the
	// container's supervisor).
	var builder int
	for deadline := time.Now().Add(time.Minute); builder == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no template build started")
		}
		tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*"))
		if len(tmps) == 0 {
			continue
		}
		for _, p := range processesMentioning(f.root) {
			if strings.Contains(p, "__supervise") {
				builder, _ = strconv.Atoi(strings.SplitN(p, ":", 2)[0])
			}
		}
	}
	if err := syscall.Kill(builder, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	create.Wait()
	for deadline := time.Now().Add(10 * time.Second); len(processesMentioning(dir)) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the template VM outlived its builder: %v", processesMentioning(dir))
		}
	}
	f.rt("delete", "--force", "victim")
	if ann := f.startOf("next", nil, "true"); ann["io.lodge.start"] != "clone" {
		t.Fatalf("after the builder was killed: %v", ann)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*")); len(tmps) != 0 {
		t.Fatalf("half-built templates left: %v", tmps)
	}
	if n := len(templateDirs(t, dir)); n != 1 {
		t.Fatalf("%d templates, want 1", n)
	}
}

// A template whose device state QEMU cannot load (a stream from another
// QEMU, or damaged past its header): the sandbox cold-boots and says why,
// the template is removed, and the next sandbox builds it anew and clones.
func TestUnrestorableTemplateColdBoots(t *testing.T) {
	f, dir := templateFixture(t)
	f.startOf("first", nil, "true")
	tpls := templateDirs(t, dir)
	if len(tpls) != 1 {
		t.Fatalf("templates: %v", tpls)
	}
	state := filepath.Join(tpls[0], "state")
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	for i := 8; i < len(b); i++ { // keep the "QEVM" header: only QEMU can tell
		b[i] ^= 0x5a
	}
	os.Chmod(state, 0o600)
	if err := os.WriteFile(state, b, 0o400); err != nil {
		t.Fatal(err)
	}
	ann := f.startOf("after-damage", nil, "true")
	if ann["io.lodge.start"] != "cold" || !strings.Contains(ann["io.lodge.start.reason"], "clone failed") {
		t.Fatalf("with an unrestorable template: %v, want a cold boot that says the clone failed", ann)
	}
	if _, err := os.Stat(tpls[0]); !os.IsNotExist(err) {
		t.Fatalf("the bad template was kept: %v", err)
	}
	if ann := f.startOf("rebuilt", nil, "true"); ann["io.lodge.start"] != "clone" {
		t.Fatalf("after the bad template went: %v", ann)
	}
	// `lodge template rm --all` removes every template no clone uses; a
	// flag it does not know is refused, not taken for a template's name.
	if r := f.lodge("template", "rm", "--bogus"); r.code == 0 || !strings.Contains(r.stdout, "unknown flag --bogus") {
		t.Errorf("template rm --bogus: exit %d: %s", r.code, r.stdout)
	}
	if r := f.lodge("template", "rm", "--all"); r.code != 0 {
		t.Errorf("template rm --all: exit %d: %s", r.code, r.stdout)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("after template rm --all: %v", ents)
	}
}

// A template directory without room for a template (here a 40 MiB
// tmpfs against a 256 MiB guest): the sandbox cold-boots and says the disk
// is full and what to do; `lodge template build` fails with the same
// words; neither leaves a file behind (no half memory file, no lock).
func TestTemplateDiskFull(t *testing.T) {
	f, dir := templateFixture(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=40m,mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	const want = "no space for a template"
	ann := f.startOf("full", nil, "true")
	if ann["io.lodge.start"] != "cold" || !strings.Contains(ann["io.lodge.start.reason"], want) ||
		!strings.Contains(ann["io.lodge.start.reason"], "set [template] dir") {
		t.Fatalf("with a full template directory: %v, want a cold boot that says the disk is full", ann)
	}
	if r := f.lodge("template", "build"); r.code == 0 || !strings.Contains(r.stdout, want) {
		t.Fatalf("lodge template build on a full disk: exit %d: %s", r.code, r.stdout)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a failed template build left %v", ents)
	}
	if r := f.lodge("check"); !strings.Contains(r.stdout, "no room to build") {
		t.Fatalf("lodge check does not say the template directory is full:\n%s", r.stdout)
	}
}

// A non-recursive read-only volume keeps the host's submounts below it
// writable (runc's "ro" with "rbind"), through a cold boot (virtio-fs
// announces submounts) and through a clone (9p: the agent makes each a
// mount of its own).
func TestNonRecursiveReadOnlyVolume(t *testing.T) {
	for _, clone := range []bool{true, false} {
		name := map[bool]string{true: "clone", false: "cold"}[clone]
		t.Run(name, func(t *testing.T) {
			f, dir := templateFixture(t)
			if !clone {
				f.config("[template]\nenabled = false\n")
			}
			vol := t.TempDir()
			sub := filepath.Join(vol, "sub")
			os.Mkdir(sub, 0o755)
			if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			defer syscall.Unmount(sub, syscall.MNT_DETACH)
			os.Mkdir(filepath.Join(f.bundle, "rootfs", "v"), 0o755)
			s := defaultSpec("sh", "-c", `echo top > /v/top 2>/dev/null && echo top=writable || echo top=readonly
				echo sub > /v/sub/f 2>/dev/null && echo sub=writable || echo sub=readonly`)
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/v", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}})
			f.writeSpec(s)
			r := f.run("nonrec-"+name, "")
			if r.code != 0 || !strings.Contains(r.stdout, "top=readonly") || !strings.Contains(r.stdout, "sub=writable") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want the volume read-only and its submount writable", r.code, r.stdout, r.stderr)
			}
			if b, err := os.ReadFile(filepath.Join(sub, "f")); err != nil || string(b) != "sub\n" {
				t.Fatalf("the write to the submount did not reach the host: %q %v", b, err)
			}
			// The clone run went through a template (built for it), the cold
			// one did not.
			if n := len(templateDirs(t, dir)); (n == 1) != clone {
				t.Fatalf("%d templates after the %s run", n, name)
			}
		})
	}
}

// A volume keeps its files' owners through a clone as through a cold
// boot: the guest sees the host's owners, its root reads a file only
// another user may read and writes into that user's private directory,
// and what it creates or chowns is owned on the host by whom the guest
// says (root, 1234, or the container's user 1000), its submounts
// included. In a clone, QEMU serves the volume from a user namespace of
// its own.
func TestVolumeOwners(t *testing.T) {
	f := newFixture(t)
	for _, clone := range []bool{true, false} {
		name := map[bool]string{true: "clone", false: "cold"}[clone]
		t.Run(name, func(t *testing.T) {
			vol := t.TempDir()
			os.Chmod(vol, 0o755)
			secret, private, sub := filepath.Join(vol, "secret"), filepath.Join(vol, "private"), filepath.Join(vol, "sub")
			os.WriteFile(secret, []byte("s3cret\n"), 0o600)
			os.Mkdir(private, 0o700)
			os.Mkdir(sub, 0o755)
			for _, p := range []string{secret, private} {
				if err := os.Chown(p, 1000, 1000); err != nil {
					t.Fatal(err)
				}
			}
			if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
				t.Fatal(err)
			}
			defer syscall.Unmount(sub, syscall.MNT_DETACH)
			ann := map[string]string{}
			if !clone {
				ann["io.lodge.template"] = "false"
			}
			os.Mkdir(filepath.Join(f.bundle, "rootfs", "v"), 0o755)
			vmount := specs.Mount{Destination: "/v", Type: "bind", Source: vol, Options: []string{"rbind", "rw"}}

			s := defaultSpec("sh", "-c", `stat -c 'secret=%u:%g' /v/secret; cat /v/secret
				echo r > /v/byroot && echo c > /v/chowned && chown 1234:1234 /v/chowned && mkdir /v/private/in && echo s > /v/sub/f && echo wrote`)
			// Docker's file capabilities (runc's default spec has none).
			fileCaps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID"}
			c := s.Process.Capabilities
			c.Bounding, c.Effective, c.Permitted = append(c.Bounding, fileCaps...), append(c.Effective, fileCaps...), append(c.Permitted, fileCaps...)
			s.Annotations = ann
			s.Mounts = append(s.Mounts, vmount)
			f.writeSpec(s)
			r := f.run("owners-root-"+name, "")
			if r.code != 0 || !strings.Contains(r.stdout, "secret=1000:1000") || !strings.Contains(r.stdout, "s3cret") || !strings.Contains(r.stdout, "wrote") {
				t.Fatalf("as root: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if got := f.startOf("owners-start", ann, "true")["io.lodge.start"]; got != name {
				t.Fatalf("started as %q, want %q", got, name)
			}

			s = defaultSpec("sh", "-c", `echo u > /v/private/byuser && echo wrote`)
			s.Process.User = specs.User{UID: 1000, GID: 1000}
			s.Annotations = ann
			s.Mounts = append(s.Mounts, vmount)
			f.writeSpec(s)
			if r := f.run("owners-user-"+name, ""); r.code != 0 || !strings.Contains(r.stdout, "wrote") {
				t.Fatalf("as uid 1000: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			for p, want := range map[string][2]uint32{"byroot": {0, 0}, "chowned": {1234, 1234}, "private/in": {0, 0},
				"private/byuser": {1000, 1000}, "sub/f": {0, 0}, "secret": {1000, 1000}} {
				var st syscall.Stat_t
				if err := syscall.Stat(filepath.Join(vol, p), &st); err != nil || st.Uid != want[0] || st.Gid != want[1] {
					t.Errorf("%s on the host: %d:%d (%v), want %d:%d", p, st.Uid, st.Gid, err, want[0], want[1])
				}
			}
		})
	}
}

// A template's guest made and destroyed one container before its snapshot
// (agent.WarmUp, which records that it ran): a clone of it, seen by guest
// root through the agent's root, holds that record and nothing of the
// container (libcontainer state, cgroup, root directory), only its own
// (a direct container: its cgroup, and no libcontainer state). Its agent
// holds lodge-init sealed, the binary direct containers start with: the
// initrd's copy must survive the agent's move to its tmpfs root (it once
// did not, and every direct container silently ran the agent's binary).
func TestCloneHoldsNoWarmUpContainer(t *testing.T) {
	f := newFixture(t)
	probe := privilegedSpec("sh", "-c", `r=/proc/1/root
		echo "sealed: $(ls -l /proc/1/fd | grep -o 'memfd:[^ ]*' | sort -u | xargs)"
		echo "state: $(ls $r/run/lodge/containers 2>/dev/null)"
		echo "cgroups: $(ls -d $r/sys/fs/cgroup/lodge/*/ 2>/dev/null | xargs -n1 basename 2>/dev/null)"
		echo "tmp: $(ls $r/tmp)"
		echo "template: $(cat $r/run/lodge/warmed-up)"`)
	probe.Linux.Namespaces = withoutNamespace(probe.Linux.Namespaces, specs.PIDNamespace)
	f.writeSpec(probe)
	r := f.run("warm-probe", "")
	if r.code != 0 || !strings.Contains(r.stdout, "cgroups: warm-probe\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q: want the guest's cgroups to list this container", r.code, r.stdout, r.stderr)
	}
	// The template made its warm-up container (the clone's guest says so)
	// and nothing of it is left.
	made := "template: warm-up container made in "
	if !strings.Contains(r.stdout, made) {
		t.Errorf("the clone's guest has no record of its template's warm-up:\n%s", r.stdout)
	}
	if strings.Contains(strings.ReplaceAll(r.stdout, made, ""), "warm-up") {
		t.Errorf("the clone holds the template's warm-up container:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, ":lodge-init") {
		t.Errorf("the clone's agent has no sealed lodge-init (direct containers would start with the agent's binary):\n%s", r.stdout)
	}
	if got := f.startOf("warm-start", nil, "true")["io.lodge.start"]; got != "clone" {
		t.Fatalf("started as %q, want a clone", got)
	}
	t.Log(r.stdout)
}

// A template's guest holds docker's default seccomp profile (the one
// `lodge run` gives) compiled before its snapshot, so a clone's container
// with that profile starts without compiling it; a profile of its own the
// host compiles, natively, and keeps for every later sandbox, and the
// clone compiles nothing.
func TestClonesHaveDockersSeccompCompiled(t *testing.T) {
	f := newFixture(t)
	docker, err := oci.DockerSeccomp(oci.DockerCaps)
	if err != nil {
		t.Fatal(err)
	}
	own := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: docker.Architectures,
		Syscalls: []specs.LinuxSyscall{{Names: []string{"kexec_load"}, Action: specs.ActErrno}}}
	for _, tc := range []struct {
		id      string
		profile *specs.LinuxSeccomp
		want    string
	}{
		{"docker-profile", docker, `seccomp="compiled before"`},
		{"own-profile", own, `seccomp="compiled on the host"`},
	} {
		spec := defaultSpec("sh", "-c", "grep Seccomp: /proc/self/status")
		spec.Linux.Seccomp = tc.profile
		f.writeSpec(spec)
		logf := filepath.Join(t.TempDir(), "lodge.log")
		r := f.run(tc.id, "", "--debug", "--log", logf, "--log-format", "json")
		if r.code != 0 || r.stdout != "Seccomp:\t2\n" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q: want a filtered container", tc.id, r.code, r.stdout, r.stderr)
		}
		b, _ := os.ReadFile(logf)
		var created string
		for _, l := range strings.Split(string(b), "\n") {
			var rec struct{ Record string }
			if json.Unmarshal([]byte(l), &rec) == nil && strings.Contains(rec.Record, `msg="container created"`) {
				created = rec.Record
			}
		}
		if !strings.Contains(string(b), `"start":"clone"`) {
			t.Fatalf("%s did not start as a clone:\n%s", tc.id, b)
		}
		if !strings.Contains(created, tc.want) {
			t.Errorf("%s: the guest's record %q lacks %s", tc.id, created, tc.want)
		}
	}
	if ents, err := os.ReadDir("/run/lodge/seccomp"); err != nil || len(ents) == 0 {
		t.Errorf("the host kept no compiled program (%v)", err)
	}
}

// TestGuestGivesBackFreedMemory: memory a container used and freed goes
// back to the host (virtio-balloon free page reporting). A clone drops its
// private copies of the template's pages (the template's file must stay as
// it was: a clone may not punch holes in it); a cold boot's QEMU punches
// them out of its guest's RAM.
func TestGuestGivesBackFreedMemory(t *testing.T) {
	f, dir := templateFixture(t)
	for _, start := range []string{"clone", "cold"} {
		t.Run(start, func(t *testing.T) {
			id := "giveback-" + start
			f.runDetachedAs(start, id, "sleep", "600")
			defer f.mustRT("delete", "--force", id)
			f.checkStartedAs(id, start)
			var mem string
			var sum [32]byte
			if start == "clone" {
				tpls := templateDirs(t, dir)
				if len(tpls) != 1 {
					t.Fatalf("templates: %v", tpls)
				}
				mem = filepath.Join(tpls[0], "memory")
				sum = fileSum(t, mem)
			}
			q, ok := servingProcs(t, filepath.Join(f.root, id))["qemu"]
			if !ok {
				t.Fatal("no QEMU process")
			}
			rss := func() int64 {
				b, err := os.ReadFile("/proc/" + q.pid + "/smaps_rollup")
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(l, "Rss:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
						return kb >> 10
					}
				}
				t.Fatal("no Rss in smaps_rollup")
				return 0
			}
			f.mustRT("exec", id, "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=56")
			filled := rss()
			f.mustRT("exec", id, "rm", "/dev/shm/fill")
			// The guest reports free pages two seconds after they are freed.
			var now int64
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
				if now = rss(); filled-now >= 40 || time.Now().After(deadline) {
					break
				}
			}
			if filled-now < 40 {
				t.Errorf("QEMU's resident memory: %d MiB with 56 MiB written in the guest, %d MiB a minute after it was freed: want 40 MiB or more given back", filled, now)
			}
			if mem != "" && fileSum(t, mem) != sum {
				t.Error("giving back a clone's memory changed the template's memory file")
			}
		})
	}
}

// No guest's memory is offered to the host's KSM unless the config says
// so (vmm.merge_pages): merging lets one tenant learn whether another's
// memory holds a page it guesses (CVE-2015-2877). When it does say so,
// clones' RAM is offered, and still never a sandbox's that opted out of
// templates. That holds when whoever starts Lodge has process-wide KSM on
// (PR_SET_MEMORY_MERGE, which children inherit across fork and exec, as
// systemd's MemoryKSM= sets it for a service).
func TestGuestMemoryMergeable(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		start, config string
		mergeAny      bool // lodge-runtime starts with process-wide KSM on
		want          bool
	}{
		{"clone", "", false, false},
		{"clone", "", true, false},
		{"clone", "[vmm]\nmerge_pages = true\n", false, true},
		{"cold", "[vmm]\nmerge_pages = true\n", false, false},
	} {
		id := fmt.Sprintf("merge-%s-%t-%t", tc.start, tc.mergeAny, tc.want)
		func() { // one case; what it started ends with it, even on failure
			f.config(tc.config)
			if tc.mergeAny {
				// This process's setting, inherited by lodge-runtime and
				// what it starts; off again when the case ends.
				if err := unix.Prctl(unix.PR_SET_MEMORY_MERGE, 1, 0, 0, 0); err != nil {
					t.Logf("process-wide KSM: %v (Linux 6.4 on): skipped", err)
					return
				}
				defer unix.Prctl(unix.PR_SET_MEMORY_MERGE, 0, 0, 0, 0)
			}
			f.runDetachedAs(tc.start, id, "sleep", "600")
			defer f.mustRT("delete", "--force", id)
			f.checkStartedAs(id, tc.start)
			q, ok := servingProcs(t, filepath.Join(f.root, id))["qemu"]
			if !ok {
				t.Fatal("no QEMU process")
			}
			flags := guestRAMFlags(t, q.pid, 256)
			if got := slices.Contains(flags, "mg"); got != tc.want {
				t.Errorf("%s with config %q, process-wide KSM %t: guest RAM mergeable (VmFlags mg) = %t, want %t; flags %v",
					tc.start, tc.config, tc.mergeAny, got, tc.want, flags)
			}
		}()
	}
}

// guestRAMFlags returns the VmFlags of pid's mapping of mib MiB: the
// guest's RAM (QEMU maps nothing else of that size).
func guestRAMFlags(t *testing.T, pid string, mib int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/smaps")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Size:"); ok {
			found = strings.TrimSpace(v) == strconv.Itoa(mib<<10)+" kB"
		}
		if v, ok := strings.CutPrefix(l, "VmFlags:"); ok && found {
			return strings.Fields(v)
		}
	}
	t.Fatalf("QEMU %s maps no %d MiB of guest RAM", pid, mib)
	return nil
}
