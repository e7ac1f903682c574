package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
)

// TestLodgeRunFlags: docker run's flags for privileges, limits, names and
// stop reach the container in its VM.
func TestLodgeRunFlags(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)

	out := l.must("run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE", "--pids-limit", "50",
		"--ulimit", "nofile=100:200", "--tmpfs", "/scratch", "--sysctl", "kernel.shmmni=2048", "--shm-size", "128m",
		"--add-host", "db:10.0.0.5", "--dns", "192.0.2.53", "--dns-search", "corp.example", ref, "sh", "-c",
		`grep CapEff /proc/self/status; echo nofile $(ulimit -n) $(ulimit -Hn); echo pids $(cat /sys/fs/cgroup/pids.max);
grep ' /scratch ' /proc/mounts; echo shmmni $(cat /proc/sys/kernel/shmmni); grep ' /dev/shm ' /proc/mounts;
grep db /etc/hosts; cat /etc/resolv.conf`)
	for _, want := range []string{
		"CapEff:\t0000000000000400\n", // CAP_NET_BIND_SERVICE alone
		"nofile 100 200\n",
		"pids 50\n",
		" /scratch tmpfs rw,nosuid,noexec",
		"shmmni 2048\n",
		"size=131072k",
		"10.0.0.5\tdb\n",
		"nameserver 192.0.2.53\n",
		"search corp.example\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("run with the flags: %q missing from:\n%s", want, out)
		}
	}
	if strings.Count(out, "nameserver") != 1 {
		t.Errorf("--dns left the host's name servers:\n%s", out)
	}

	// Weights, CPUs, a soft memory floor and more groups, in the guest's
	// cgroup; --cidfile and --label-file on the host.
	dir := t.TempDir()
	cid, lf := filepath.Join(dir, "cid"), filepath.Join(dir, "labels")
	os.WriteFile(lf, []byte("# from a file\ntier=web\n"), 0o644)
	out = l.must("run", "--name", "weighed", "--cidfile", cid, "--label-file", lf, "--cpu-shares", "512", "--cpuset-cpus", "0",
		"--memory-reservation", "32m", "--group-add", "44", "--network", "none", ref, "sh", "-c",
		`echo weight $(cat /sys/fs/cgroup/cpu.weight) cpus $(cat /sys/fs/cgroup/cpuset.cpus) low $(cat /sys/fs/cgroup/memory.low) groups $(id -G)`)
	if want := fmt.Sprintf("weight %d cpus 0 low 33554432 groups 0 44\n", cgroups.ConvertCPUSharesToCgroupV2Value(512)); out != want {
		t.Errorf("--cpu-shares 512 --cpuset-cpus 0 --memory-reservation 32m --group-add 44: %q", out)
	}
	if b, _ := os.ReadFile(cid); string(b) != l.inspect("weighed").ID {
		t.Errorf("--cidfile holds %q", b)
	}
	if got := l.must("inspect", "-f", "{{.Config.Labels.tier}}", "weighed"); got != "web\n" {
		t.Errorf("--label-file: %q", got)
	}
	if r := l.run("", "run", "--rm", "--cidfile", cid, "--network", "none", ref, "true"); r.code == 0 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("--cidfile of a file that exists: exit %d %s", r.code, r.stderr)
	}
	l.must("rm", "weighed")

	// --privileged: every capability, no seccomp filter, no masked paths,
	// /sys writable: in the container's own guest.
	// (With --network none a network namespace of its own: net.* sysctls.)
	out = l.must("run", "--rm", "--privileged", "--network", "none", "--sysctl", "net.ipv4.ip_forward=1", ref, "sh", "-c",
		`grep -E 'CapEff|Seccomp:' /proc/self/status; grep ' /sys ' /proc/mounts; echo forward $(cat /proc/sys/net/ipv4/ip_forward);
grep -c ' /proc/keys ' /proc/mounts; true`)
	if !strings.Contains(out, "CapEff:\t000001ffffffffff\n") || !strings.Contains(out, "Seccomp:\t0\n") ||
		!strings.Contains(out, " /sys sysfs rw") || !strings.Contains(out, "forward 1\n") || !strings.HasSuffix(out, "0\n") {
		t.Errorf("--privileged:\n%s", out)
	}
	// ... and its guest's devices: a free loop device (the guest's roots
	// hold the first ones) set up on a file, TUN and FUSE (their drivers
	// loaded on demand: an unattached tun reads "bad state", an unmounted
	// fuse device refuses a read; with no driver, the open fails).
	out = l.must("run", "--rm", "--privileged", "--network", "none", ref, "sh", "-c",
		`dd if=/dev/zero of=/dev/shm/img bs=1024 count=64 2>/dev/null; dev=$(losetup -f) && losetup $dev /dev/shm/img && losetup $dev && echo loop-ok; losetup -d $dev;
cat /dev/net/tun 2>&1 | grep -q 'bad state' && echo tun-ok; cat /dev/fuse 2>&1 | grep -q 'not permitted' && echo fuse-ok; true`)
	for _, want := range []string{"loop-ok", "tun-ok", "fuse-ok"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("--privileged's devices: no %s in:\n%s", want, out)
		}
	}
	// Without it, docker's defaults: a seccomp filter, /proc/keys masked,
	// no such devices.
	out = l.must("run", "--rm", ref, "sh", "-c", `grep 'Seccomp:' /proc/self/status; grep -c ' /proc/keys ' /proc/mounts; test -e /dev/fuse && echo fuse; true`)
	if out != "Seccomp:\t2\n1\n" {
		t.Errorf("the defaults: %q", out)
	}

	// Labels, stop signal and timeout are the container's.
	l.must("run", "-d", "--name", "labelled", "-l", "tier=web", "--stop-timeout", "1", "--stop-signal", "SIGUSR1", "--init", ref, "sleep", "1000")
	if out := l.must("ps", "-q", "--filter", "label=tier=web"); strings.TrimSpace(out) == "" {
		t.Errorf("ps --filter label=tier=web found nothing")
	}
	if out := l.must("ps", "-q", "--filter", "label=tier=db"); out != "" {
		t.Errorf("ps --filter label=tier=db: %q", out)
	}
	if out := l.must("inspect", "-f", "{{.Config.Labels.tier}} {{.Config.StopSignal}} {{.Config.StopTimeout}}", "labelled"); out != "web SIGUSR1 1\n" {
		t.Errorf("inspect of labels and stop: %q", out)
	}
	l.must("stop", "labelled")
	if code := strings.TrimSpace(l.must("wait", "labelled")); code != "138" {
		t.Errorf("stop with --stop-signal SIGUSR1: exit %s, want 138 (sleep killed by the SIGUSR1 tini forwarded)", code)
	}
	l.must("rm", "labelled")

	for _, bad := range [][]string{
		{"--cap-add", "FLY"}, {"--ulimit", "nofile"}, {"--sysctl", "kernel.panic=1"}, {"--add-host", "db"},
		{"--dns", "ns.example"}, {"--tmpfs", "rel"}, {"-l", "=x"}, {"--sysctl", "net.ipv4.ip_forward=1"},
	} {
		r := l.run("", append(append([]string{"run", "--rm"}, bad...), ref, "true")...)
		if r.code != 125 || !strings.Contains(r.stderr, bad[0]) {
			t.Errorf("run %v: exit %d, %s; want 125 naming %s", bad, r.code, r.stderr, bad[0])
		}
	}
	if ps := l.must("ps", "-a", "-q"); ps != "" {
		t.Errorf("containers left: %q", ps)
	}

	// --timeout: the run is stopped at its deadline (its stop signal, which
	// sleep as PID 1 ignores, then SIGKILL after --stop-timeout).
	if r := l.run("", "run", "--rm", "--timeout", "2s", "--stop-timeout", "1", ref, "sleep", "120"); r.code != 137 {
		t.Errorf("run --timeout 2s of sleep 120: exit %d, want 137\n%s", r.code, r.stderr)
	}

}

// TestLodgeStorageOpt: --storage-opt size= sizes the container's
// writable layer, which its root's free space shows; a size lodge cannot
// give is refused before anything is made.
func TestLodgeStorageOpt(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	rootKB := func(args ...string) int {
		t.Helper()
		out := l.must(append(append([]string{"run", "--rm"}, args...), ref, "df", "-k", "/")...)
		var kb int
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if f := strings.Fields(lines[len(lines)-1]); len(f) < 2 || func() error { _, err := fmt.Sscan(f[1], &kb); return err }() != nil {
			t.Fatalf("df: %q", out)
		}
		return kb
	}
	if kb := rootKB("--storage-opt", "size=300m"); kb < 250<<10 || kb > 300<<10 {
		t.Errorf("--storage-opt size=300m: a root of %d KiB", kb)
	}
	if kb := rootKB(); kb < 9<<20 {
		t.Errorf("the default writable layer: a root of %d KiB, want about 10 GiB", kb)
	}
	l.must("create", "--name", "sized", "--storage-opt", "size=2g", ref, "true")
	if got := strings.TrimSpace(l.must("inspect", "-f", "{{.HostConfig.StorageOpt.size}}", "sized")); got != "2g" {
		t.Errorf("inspect's StorageOpt: %q", got)
	}
	l.must("rm", "sized")
	if r := l.run("", "run", "--rm", "--storage-opt", "size=1m", ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "from 64m to 16t") {
		t.Errorf("size=1m: exit %d, %s", r.code, r.stderr)
	}
	if ps := strings.TrimSpace(l.must("ps", "-a", "-q")); ps != "" {
		t.Errorf("left: %s", ps)
	}
}
