package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/layers"
)

// buildAttacker puts test/attacker (guest root's stand-in) into a rootfs
// as /attacker.
func buildAttacker(t *testing.T, rootfs string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "attacker")
	cmd := exec.Command("go", "build", "-o", filepath.Join(rootfs, "attacker"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the attacker: %v\n%s", err, out)
	}
}

// allCaps are the capabilities of Linux 6.1.
var allCaps = strings.Fields(`CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL
	CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN
	CAP_NET_RAW CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT
	CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD CAP_LEASE
	CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG CAP_WAKE_ALARM
	CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE`)

// privilegedSpec is a container as privileged as a spec can make it: every
// capability, no seccomp, no masked or read-only paths, every device.
func privilegedSpec(args ...string) *specs.Spec {
	s := defaultSpec(args...)
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: allCaps, Effective: allCaps,
		Permitted: allCaps, Inheritable: allCaps, Ambient: allCaps}
	s.Process.NoNewPrivileges = false
	s.Linux.Seccomp = nil
	s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
	s.Linux.Resources = &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}}
	return s
}

// shareChanges picks, from the attacker's output, the changes that
// succeeded in the share's own directories (its root, a container's
// directory, mounts/, mounts/N), where the host attaches: those are the
// guest's to read only. Below them are the attached rootfs and volumes,
// writable where the spec says so.
func shareChanges(out, share string) []string {
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		op, rest, _ := strings.Cut(strings.TrimSpace(l), " ")
		path, ok := strings.CutSuffix(rest, ": ok")
		if !ok || !strings.HasPrefix(op, "plant") && op != "replace-with-link" {
			continue
		}
		dir := path
		if op == "replace-with-link" {
			dir = filepath.Dir(path)
		}
		rel, err := filepath.Rel(share, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		parts := strings.Split(rel, "/")
		if rel == "." || len(parts) == 1 || (parts[1] == "mounts" && len(parts) <= 3) {
			bad = append(bad, l)
		}
	}
	return bad
}

// convertLayers makes the images of this containerd's committed layers
// and returns their hashes.
func (c *ctrd) convertLayers() map[string]string {
	c.t.Helper()
	st := &layers.Store{Dir: config.Default().Layers.Dir}
	dirs, _ := filepath.Glob(filepath.Join(c.dir, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs"))
	out := map[string]string{}
	for _, d := range dirs {
		p, _, err := st.FromDir(context.Background(), d)
		if err != nil {
			c.t.Fatal(err)
		}
		out[p] = fileHash(c.t, p)
	}
	return out
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func withoutNamespace(nss []specs.LinuxNamespace, typ specs.LinuxNamespaceType) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, ns := range nss {
		if ns.Type != typ {
			out = append(out, ns)
		}
	}
	return out
}

// tree records every entry below dir as the host sees it: type and mode
// bits (setuid included), owner, size, content hash, link target, xattrs.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d rdev=%d", st.Mode, st.Uid, st.Gid, st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, _ := os.ReadFile(p)
			desc += fmt.Sprintf(" size=%d sha=%x", len(b), sha256.Sum256(b))
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		}
		buf := make([]byte, 4096)
		if n, err := unix.Llistxattr(p, buf); err == nil && n > 0 {
			desc += " xattrs=" + string(bytes.ReplaceAll(buf[:n], []byte{0}, []byte{','}))
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hostMounts is the host's mount table (mount points and options), but for
// the network namespace directory, which a daemon of an earlier test
// (containerd, dockerd) may mount once while this test runs.
func hostMounts(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] != "/run/netns" {
			out = append(out, f[4]+" "+f[5])
		}
	}
	sort.Strings(out)
	return out
}

// hostEtc lists the host's /etc, where the guest's symlinks point.
func hostEtc(t *testing.T) []string {
	entries, err := os.ReadDir("/etc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestGuestRootCannotChangeReadOnlyMounts: guest root (a privileged
// container) remounts a read-only volume, a recursive read-only volume, a
// read-only file and the read-only root read-write and writes to them;
// mounts the share's tag a second time and plants files, directories and
// symlinks everywhere in it; makes device nodes, setuid/setgid files and a
// file capability in a read-write volume. The host's files, mounts and /etc
// must be as they were, bar the plain writes the read-write volume allows.
// secondMount reports whether the attacker's second mount of the share's
// tag was made (virtio-fs) or refused because the tag takes one mount (9p,
// in a clone of a template): either way the attack ran as far as it can.
func secondMount(out string) bool {
	return strings.Contains(out, "mount-share /dev/lodge-s: ok") ||
		strings.Contains(out, "mount-share /dev/lodge-s: device or resource busy")
}

func TestGuestRootCannotChangeReadOnlyMounts(t *testing.T) {
	f := newFixture(t)
	rootfs := filepath.Join(f.bundle, "rootfs")
	buildAttacker(t, rootfs)
	host := t.TempDir()
	for _, d := range []string{"ro/d", "rro/sub", "rw"} {
		os.MkdirAll(filepath.Join(host, d), 0o755)
	}
	for _, p := range []string{"ro/f", "ro/d/g", "rro/f", "rro/sub/g", "hostfile"} {
		os.WriteFile(filepath.Join(host, p), []byte("original "+p+"\n"), 0o644)
	}
	// The mount points exist, so that the rootfs's listing can be compared.
	for _, d := range []string{"ro", "rro", "rw"} {
		os.Mkdir(filepath.Join(rootfs, d), 0o755)
	}
	os.WriteFile(filepath.Join(rootfs, "hostfile"), nil, 0o644)

	s := privilegedSpec("sh", "-c", `/attacker guest-root /run/lodge/shares/lodge-shared;
		/attacker share /dev/lodge-s; /attacker privs /rw; /attacker writes /ro /rro /hostfile; /attacker writes /`)
	// In the guest's PID namespace, to reach the agent's mount namespace.
	s.Linux.Namespaces = withoutNamespace(s.Linux.Namespaces, specs.PIDNamespace)
	s.Root.Readonly = true
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/ro", Type: "bind", Source: filepath.Join(host, "ro"), Options: []string{"rbind", "ro"}},
		specs.Mount{Destination: "/rro", Type: "bind", Source: filepath.Join(host, "rro"), Options: []string{"rbind", "rro"}},
		specs.Mount{Destination: "/hostfile", Type: "bind", Source: filepath.Join(host, "hostfile"), Options: []string{"bind", "ro"}},
		specs.Mount{Destination: "/rw", Type: "bind", Source: filepath.Join(host, "rw"), Options: []string{"rbind", "rw"}})
	f.writeSpec(s)

	before := map[string]map[string]string{"ro": tree(t, filepath.Join(host, "ro")),
		"rro": tree(t, filepath.Join(host, "rro")), "hostfile": tree(t, filepath.Join(host, "hostfile")),
		"rootfs": tree(t, rootfs)}
	mounts, etc := hostMounts(t), hostEtc(t)

	r := f.run("attack", "")
	t.Logf("attacker (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	// The attack really ran as guest root: the remounts and the second
	// mount of the share succeeded inside the VM.
	for _, want := range []string{"remount /ro: ok", "remount /rro: ok", "remount /: ok",
		"enter-guest-root /run/lodge/shares/lodge-shared: ok"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the attack did not get as far as %q", want)
		}
	}
	if !secondMount(r.stdout) {
		t.Errorf("a second mount of the share's tag was neither made nor refused as busy:\n%s", r.stdout)
	}
	for _, l := range shareChanges(r.stdout, "/run/lodge/shares/lodge-shared") {
		t.Errorf("guest root changed the share's own directories: %s", l)
	}
	for name, b := range before {
		p := filepath.Join(host, name)
		if name == "rootfs" {
			p = rootfs
		}
		if d := cmp.Diff(b, tree(t, p)); d != "" {
			t.Errorf("guest root changed the read-only %s on the host (-before +after):\n%s", name, d)
		}
	}
	if d := cmp.Diff(mounts, hostMounts(t)); d != "" {
		t.Errorf("the host's mount table changed (-before +after):\n%s", d)
	}
	if d := cmp.Diff(etc, hostEtc(t)); d != "" {
		t.Errorf("the host's /etc changed (-before +after):\n%s", d)
	}
	// The read-write volume took the plain write, and nothing that would
	// carry privilege on the host.
	if b, err := os.ReadFile(filepath.Join(host, "rw", "ok")); err != nil || string(b) != "written by guest\n" {
		t.Errorf("a plain write to the read-write volume did not reach the host: %q, %v (the volume holds %v)", b, err, tree(t, filepath.Join(host, "rw")))
	}
	for p, desc := range tree(t, filepath.Join(host, "rw")) {
		var st unix.Stat_t
		unix.Lstat(filepath.Join(host, "rw", p), &st)
		if typ := st.Mode & unix.S_IFMT; typ == unix.S_IFCHR || typ == unix.S_IFBLK {
			t.Errorf("device node on the host: rw/%s %s", p, desc)
		}
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("setuid/setgid file on the host: rw/%s %s", p, desc)
		}
		if strings.Contains(desc, "security.capability") {
			t.Errorf("file capability on the host: rw/%s %s", p, desc)
		}
	}
}

// TestGuestRootPlantsDuringTeardown: guest root plants symlinks and
// directories everywhere in the share while the host tears the sandbox
// down; the host's rootfs, volume, /etc and mounts are as they were and
// nothing is left (the fixture checks).
func TestGuestRootPlantsDuringTeardown(t *testing.T) {
	f := newFixture(t)
	rootfs := filepath.Join(f.bundle, "rootfs")
	buildAttacker(t, rootfs)
	vol := t.TempDir()
	os.WriteFile(filepath.Join(vol, "f"), []byte("original\n"), 0o644)
	os.Mkdir(filepath.Join(rootfs, "vol"), 0o755)
	s := privilegedSpec("/attacker", "plant-loop", "/dev/lodge-s")
	// In the guest's PID namespace: where the tag takes one mount (9p in a
	// clone), the attacker plants in the agent's own.
	s.Linux.Namespaces = withoutNamespace(s.Linux.Namespaces, specs.PIDNamespace)
	s.Root.Readonly = true
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}})
	f.writeSpec(s)
	before, volBefore, mounts, etc := tree(t, rootfs), tree(t, vol), hostMounts(t), hostEtc(t)

	out := filepath.Join(t.TempDir(), "stdout")
	of, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := f.command(ctx, "run", "-d", "--bundle", f.bundle, "planter")
	cmd.Stdout, cmd.Stderr = of, of
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out)
		t.Fatalf("run -d: %v: %s", err, b)
	}
	// A test that fails before its delete leaves no VM running (this runs
	// before the fixture's check for leftovers; after the delete below, it
	// finds nothing to do).
	t.Cleanup(func() { f.rt("delete", "--force", "planter") })
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(out)
		if bytes.Count(b, []byte("plant-link")) > 20 {
			break // the loop is planting
		}
		if time.Now().After(deadline) || bytes.Contains(b, []byte("mount-share /dev/lodge-s: ")) && !secondMount(string(b)) {
			t.Fatalf("the attacker is not planting:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.mustRT("delete", "--force", "planter")

	if d := cmp.Diff(before, tree(t, rootfs)); d != "" {
		t.Errorf("the read-only rootfs changed (-before +after):\n%s", d)
	}
	if d := cmp.Diff(volBefore, tree(t, vol)); d != "" {
		t.Errorf("the read-only volume changed (-before +after):\n%s", d)
	}
	if d := cmp.Diff(mounts, hostMounts(t)); d != "" {
		t.Errorf("the host's mount table changed (-before +after):\n%s", d)
	}
	if d := cmp.Diff(etc, hostEtc(t)); d != "" {
		t.Errorf("the host's /etc changed (-before +after):\n%s", d)
	}
}

// TestShimPodGuestRoot: in a CRI pod, a privileged container acting as
// guest root attacks the share from the guest's root namespace, then keeps
// planting symlinks and directories in a second mount of the share's tag
// while a later container of the pod gets its rootfs and volumes attached,
// and while the pod is torn down. The later container works, the host's
// volumes and /etc are unchanged, and nothing is left.
func TestShimPodGuestRoot(t *testing.T) {
	needCrictl(t)
	c := startContainerdWith(t, true)
	ref := "lodge.test/attacker:1"
	c.importImage(pauseRef, "sleep", "2147483647")
	c.importImageWith(ref, func(rootfs string) { buildAttacker(t, rootfs) })
	logs := t.TempDir()
	// Host PID namespace: in a Lodge pod, the VM's.
	sc := map[string]any{"privileged": true, "namespace_options": map[string]any{"pid": 2}}
	podCfg := writeJSON(t, map[string]any{
		"metadata":      map[string]any{"name": "hostile", "namespace": "lodge", "uid": "uid-hostile", "attempt": 1},
		"log_directory": logs,
		"linux":         map[string]any{"security_context": sc},
	})
	pod, err := c.crictl("runp", "--runtime", "lodge", podCfg)
	if err != nil {
		t.Fatalf("runp: %v", err)
	}
	vol, data := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(vol, "f"), []byte("original\n"), 0o644)
	volBefore, etc := tree(t, vol), hostEtc(t)
	create := func(name string, linux map[string]any, mounts []map[string]any, cmd ...string) string {
		t.Helper()
		return c.startContainer(pod, podCfg, map[string]any{
			"metadata": map[string]any{"name": name}, "image": map[string]any{"image": ref},
			"command": cmd, "log_path": name + ".log", "linux": linux, "mounts": mounts,
		})
	}
	// The layers' images exist before the attack (made here, as the shim
	// would make them): the attacker's root is built from these files.
	images := c.convertLayers()
	attacker := create("attacker", map[string]any{"security_context": sc}, nil, "sh", "-c",
		"/attacker guest-root /run/lodge/shares/lodge-shared; exec /attacker plant-loop /dev/lodge-s")
	deadline := time.Now().Add(2 * time.Minute)
	// Planting in a second mount of the tag, or (9p, in a clone: the tag
	// takes one mount) in the agent's own.
	for out := ""; strings.Count(out, "plant-link ") < 20; out = c.crictlOut("logs", attacker) {
		if time.Now().After(deadline) {
			t.Fatalf("the attacker is not planting:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	out := c.crictlOut("logs", attacker)
	if !strings.Contains(out, "enter-guest-root /run/lodge/shares/lodge-shared: ok") {
		t.Errorf("the attacker did not reach the guest's root namespace:\n%s", out)
	}
	for _, l := range shareChanges(out, "/run/lodge/shares/lodge-shared") {
		t.Errorf("guest root changed the share's own directories: %s", l)
	}
	tried := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "/layers/") && strings.HasPrefix(l, "write ") {
			tried++
		}
		if strings.Contains(l, "/layers/") && strings.HasSuffix(l, ": ok") && !strings.HasPrefix(l, "plant") {
			t.Errorf("guest root changed a layer image: %s", l)
		}
	}
	if tried == 0 {
		t.Errorf("the attacker never tried to write a layer image:\n%s", out)
	}
	later := create("later", map[string]any{}, []map[string]any{
		{"container_path": "/vol", "host_path": vol, "readonly": true},
		{"container_path": "/data", "host_path": data},
	}, "sh", "-c", "cat /vol/f && echo later-ok > /data/out")
	deadline = time.Now().Add(time.Minute)
	for c.crictlOut("inspect", "-o", "go-template", "--template", "{{.status.state}}", later) != "CONTAINER_EXITED" {
		if time.Now().After(deadline) {
			t.Fatal("the later container did not finish")
		}
		time.Sleep(300 * time.Millisecond)
	}
	if got := c.crictlOut("logs", later); got != "original" {
		t.Errorf("the later container read %q from its read-only volume", got)
	}
	if b, _ := os.ReadFile(filepath.Join(data, "out")); string(b) != "later-ok\n" {
		t.Errorf("the later container's read-write volume: %q", b)
	}
	c.removePod(pod)
	for p, h := range images {
		if got := fileHash(t, p); got != h {
			t.Errorf("layer image %s changed under a hostile guest", p)
		}
	}
	if d := cmp.Diff(volBefore, tree(t, vol)); d != "" {
		t.Errorf("the read-only volume changed (-before +after):\n%s", d)
	}
	if d := cmp.Diff(etc, hostEtc(t)); d != "" {
		t.Errorf("the host's /etc changed (-before +after):\n%s", d)
	}
	for _, m := range hostMounts(t) {
		if strings.Contains(m, vol) || strings.Contains(m, data) || strings.Contains(m, "planted") || strings.HasPrefix(m, "/etc") {
			t.Errorf("host mount left or made: %s", m)
		}
	}
}

// CVE-2019-5736 class: the binary that starts containers in the guest (the
// agent, libcontainer's init) cannot be overwritten from a container, even
// by guest root that sees it as PID 1 and holds every capability: it runs
// from a sealed memfd, which no open for writing, reopen of a read
// descriptor or truncation changes. A container started after the attack
// works.
func TestAgentBinaryCannotBeOverwritten(t *testing.T) {
	f := newFixture(t)
	attack := `readlink /proc/1/exe; a=$(md5sum </proc/1/exe)
		(printf EVIL >>/proc/1/exe) 2>/dev/null && echo WROTE-append
		(printf EVIL >/proc/1/exe) 2>/dev/null && echo WROTE-truncate
		(exec 3</proc/1/exe; printf EVIL >/proc/self/fd/3) 2>/dev/null && echo WROTE-reopen
		(exec 3</proc/1/exe; printf EVIL >>/proc/self/fd/3) 2>/dev/null && echo WROTE-reopen-append
		[ "$a" = "$(md5sum </proc/1/exe)" ] && echo same`
	s := privilegedSpec("sh", "-c", attack)
	s.Linux.Namespaces = withoutNamespace(s.Linux.Namespaces, specs.PIDNamespace)
	f.writeSpec(s)
	r := f.run("cve-2019-5736", "")
	if r.code != 0 || !strings.Contains(r.stdout, "lodge-agent") || strings.Contains(r.stdout, "WROTE") || !strings.Contains(r.stdout, "same") {
		t.Fatalf("exit %d, stdout %q, stderr %q: want PID 1 to be the sealed agent, every write refused and its bytes the same", r.code, r.stdout, r.stderr)
	}
	f.writeSpec(defaultSpec("echo", "after"))
	if r := f.run("after", ""); r.code != 0 || r.stdout != "after\n" {
		t.Fatalf("a container after the attack: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// CVE-2024-21626 class: a spec whose working directory is a descriptor the
// runtime might leak (/proc/self/fd/N) never starts a process whose
// working directory is outside the container's root (the guest's root has
// /lodge, which the container's rootfs has not).
func TestLeakedDescriptorAsCwd(t *testing.T) {
	f := newFixture(t)
	// The marker is there to be found (seen through PID 1, the agent).
	probe := privilegedSpec("sh", "-c", "ls -d /proc/1/root/lodge && echo marker")
	probe.Linux.Namespaces = withoutNamespace(probe.Linux.Namespaces, specs.PIDNamespace)
	f.writeSpec(probe)
	if r := f.run("marker", ""); !strings.Contains(r.stdout, "marker") {
		t.Fatalf("the guest's root has no /lodge: %q %q", r.stdout, r.stderr)
	}
	for fd := 3; fd <= 8; fd++ {
		s := defaultSpec("sh", "-c", `pwd; ls -d ../../../../../../../../lodge >/dev/null 2>&1 && echo ESCAPED; echo ran`)
		s.Process.Cwd = fmt.Sprintf("/proc/self/fd/%d", fd)
		f.writeSpec(s)
		r := f.run(fmt.Sprintf("cwd-fd-%d", fd), "")
		if strings.Contains(r.stdout, "ESCAPED") {
			t.Errorf("cwd /proc/self/fd/%d: the container's working directory is outside its root: %q", fd, r.stdout)
		}
		t.Logf("cwd /proc/self/fd/%d: exit %d, stdout %q, stderr %.200q", fd, r.code, r.stdout, r.stderr)
	}
	// The same through exec (runc exec --cwd).
	f.writeSpec(defaultSpec("sleep", "600"))
	f.mustRT("run", "-d", "--bundle", f.bundle, "cwd-exec")
	defer f.mustRT("delete", "--force", "cwd-exec")
	if out := f.mustRT("exec", "--cwd", "/tmp", "cwd-exec", "pwd"); out != "/tmp\n" {
		t.Fatalf("exec --cwd /tmp: %q", out)
	}
	for fd := 3; fd <= 8; fd++ {
		r := f.rt("exec", "--cwd", fmt.Sprintf("/proc/self/fd/%d", fd), "cwd-exec",
			"sh", "-c", `pwd; ls -d ../../../../../../../../lodge >/dev/null 2>&1 && echo ESCAPED; echo ran`)
		if strings.Contains(r.stdout, "ESCAPED") {
			t.Errorf("exec --cwd /proc/self/fd/%d: the working directory is outside the container's root: %q", fd, r.stdout)
		}
	}
}

// The 2025 runc advisories, in the forms an image or a spec can carry
// (their races need a second container sharing the target's /dev, which
// one sandbox's containers do not): runc bound a procfs file where it meant
// the container's /dev/null over masked paths (CVE-2025-31133), /dev/pts/N
// over /dev/console (CVE-2025-52565), or wrote process labels through a
// /proc that was not procfs (CVE-2025-52881, after CVE-2019-19921). In each,
// the container gets no writable procfs file: libcontainer in the guest
// refuses the image, or the targets are what they should be and the guest's
// kernel.core_pattern is unchanged after the container wrote to each.
func TestRuncMountTargets(t *testing.T) {
	refused := func(t *testing.T, plant func(rootfs string) error, want string) {
		f := newFixture(t)
		s := defaultSpec("sh", "-c", `printf '|/evil' >/dev/null; echo started`)
		// Without a /dev of its own the container's /dev is the image's.
		var mounts []specs.Mount
		for _, m := range s.Mounts {
			if !strings.HasPrefix(m.Destination, "/dev") {
				mounts = append(mounts, m)
			}
		}
		s.Mounts, s.Root.Readonly = mounts, false
		f.writeSpec(s)
		if err := plant(filepath.Join(f.bundle, "rootfs")); err != nil {
			t.Fatal(err)
		}
		r := f.run("planted", "")
		if r.code == 0 || strings.Contains(r.stdout, "started") || !strings.Contains(r.stderr, want) {
			t.Fatalf("exit %d, stdout %q, stderr %q: want the container refused with %q", r.code, r.stdout, r.stderr, want)
		}
	}
	t.Run("CVE-2025-31133/dev-null-symlink", func(t *testing.T) {
		refused(t, func(rootfs string) error {
			return os.Symlink("/proc/sys/kernel/core_pattern", filepath.Join(rootfs, "dev", "null"))
		}, "container's /dev/null is invalid")
	})
	t.Run("CVE-2025-52881/proc-symlink", func(t *testing.T) {
		refused(t, func(rootfs string) error {
			if err := os.Remove(filepath.Join(rootfs, "proc")); err != nil {
				return err
			}
			if err := os.Mkdir(filepath.Join(rootfs, "fake-proc"), 0o755); err != nil {
				return err
			}
			return os.Symlink("/fake-proc", filepath.Join(rootfs, "proc"))
		}, "must be mounted on ordinary directory")
	})
	t.Run("CVE-2025-52565/console", func(t *testing.T) {
		f := newFixture(t)
		targets := "/dev/console /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug"
		s := defaultSpec("sh", "-c", `before=$(cat /proc/sys/kernel/core_pattern)
			for p in `+targets+`; do [ -e $p ] && echo "target $p $(stat -c '%F %t:%T' $p) $(stat -f -c %T $p)"; done
			for p in `+targets+` /proc/sys/kernel/core_pattern /proc/sysrq-trigger; do (printf '|/evil' >$p) 2>/dev/null; done
			[ "$(cat /proc/sys/kernel/core_pattern)" = "$before" ] && echo core_pattern-unchanged; echo done`)
		s.Process.Terminal = true
		f.writeSpec(s)
		sock, masterCh := consoleSocket(t)
		f.mustRT("create", "--bundle", f.bundle, "--console-socket", sock, "console")
		defer f.rt("delete", "--force", "console")
		master := receiveMaster(t, masterCh)
		defer master.Close()
		f.mustRT("start", "console")
		var out bytes.Buffer
		master.SetReadDeadline(time.Now().Add(2 * time.Minute))
		buf := make([]byte, 4096)
		for !strings.Contains(out.String(), "done") {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		got := strings.ReplaceAll(out.String(), "\r", "")
		if !regexp.MustCompile(`target /dev/console character special file 88:[0-9a-f]+ devpts`).MatchString(got) {
			t.Errorf("/dev/console is not the container's pty (major 136, devpts):\n%s", got)
		}
		for _, want := range []string{
			"target /proc/kcore character special file 1:3 tmpfs",
			"target /proc/keys character special file 1:3 tmpfs",
			"target /proc/timer_list character special file 1:3 tmpfs",
			"core_pattern-unchanged",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("the container's output lacks %q:\n%s", want, got)
			}
		}
	})
}
