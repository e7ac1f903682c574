package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerd is a private Docker daemon (Debian's docker.io) with lodge-runtime
// as runtime "lodge", its own data and exec roots, no bridge and no
// iptables rules: it changes nothing on the host outside its directory.
type dockerd struct {
	tool
	dir  string
	sock string
}

func startDockerd(t *testing.T) *dockerd {
	t.Helper()
	if _, err := exec.LookPath("dockerd"); err != nil {
		if os.Getenv("LODGE_INTEGRATION") != "" {
			t.Fatal("dockerd not installed (make setup installs docker.io)")
		}
		t.Skip("dockerd not installed")
	}
	bin := binDir(t)
	// Containers' cgroups go below one the test makes and removes.
	cgParent := fmt.Sprintf("lodgetest-docker-%d", os.Getpid())
	makeHostCgroup(t, cgParent)
	d := &dockerd{dir: t.TempDir()}
	d.sock = filepath.Join(d.dir, "docker.sock")
	d.tool = tool{t: t, name: "docker", args: []string{"-H", "unix://" + d.sock}}
	cfg := filepath.Join(d.dir, "daemon.json")
	os.WriteFile(cfg, []byte("{}"), 0o644) // not the host's /etc/docker/daemon.json
	logf, err := os.Create(filepath.Join(d.dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dockerd", "--config-file", cfg, "-H", "unix://"+d.sock,
		"--data-root", filepath.Join(d.dir, "data"), "--exec-root", filepath.Join(d.dir, "exec"),
		"--pidfile", filepath.Join(d.dir, "docker.pid"), "--storage-driver", "vfs",
		"--bridge", "none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--userland-proxy=false", "--cgroup-parent", cgParent,
		"--add-runtime", "lodge="+filepath.Join(bin, "lodge-runtime"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		if out, err := d.run("ps", "-aq"); err == nil && strings.TrimSpace(out) != "" {
			d.run(append([]string{"rm", "-f"}, strings.Fields(out)...)...)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-exited
		}
		if procs := processesMentioning(d.dir); len(procs) > 0 {
			t.Errorf("processes left behind: %v", procs)
		}
		if m := mountsBelow(d.dir); len(m) > 0 {
			t.Errorf("mounts left behind: %v", m)
			for _, p := range m {
				syscall.Unmount(p, syscall.MNT_DETACH)
			}
		}
	})
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := d.run("version"); err == nil {
			return d
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
			t.Fatalf("dockerd exited:\n%s", b)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("dockerd did not answer within a minute")
		}
	}
}

// TestDocker drives lodge-runtime through Docker (`--runtime lodge`):
// containerd's runc shim runs it under Docker's runtime root, whose
// 64-character container ids put the sandbox's sockets past the unix
// socket path limit. run --rm, exit codes, run -d + exec + logs + stop,
// and a failing container whose reason reaches the user.
func TestDocker(t *testing.T) {
	d := startDockerd(t)
	img := rootfsTar(t)
	const ref = "lodge.test/busybox:docker"
	d.must("import", "--change", `CMD ["sh"]`, img, ref)
	run := []string{"run", "--runtime", "lodge", "--network", "none"}

	out := d.must(append(run, "--rm", ref, "sh", "-c", "echo hello from docker; uname -r")...)
	if !strings.Contains(out, "hello from docker") || strings.Contains(out, hostKernel(t)) {
		t.Errorf("docker run --rm printed %q (host kernel %s)", out, hostKernel(t))
	}
	if out, err := d.run(append(run, "--rm", ref, "sh", "-c", "exit 9")...); err == nil {
		t.Errorf("exit 9 reported as success: %s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 9 {
		t.Errorf("exit 9 reported as %v: %s", err, out)
	}

	d.must(append(run, "-d", "--name", "svc", ref,
		"sh", "-c", `echo started; trap 'echo stopping; exit 0' TERM; while :; do sleep 0.2; done`)...)
	if out := d.must("exec", "svc", "sh", "-c", "echo exec-ok $((6*7))"); !strings.Contains(out, "exec-ok 42") {
		t.Errorf("docker exec printed %q", out)
	}
	if out := d.must("ps", "--format", "{{.Names}} {{.Status}}"); !strings.Contains(out, "svc Up") {
		t.Errorf("docker ps: %q", out)
	}
	d.must("stop", "-t", "20", "svc")
	if logs := d.must("logs", "svc"); !strings.Contains(logs, "started") || !strings.Contains(logs, "stopping") {
		t.Errorf("docker logs: %q (want the start and the graceful stop)", logs)
	}
	if st := strings.TrimSpace(d.must("inspect", "-f", "{{.State.ExitCode}}", "svc")); st != "0" {
		t.Errorf("exit code after a graceful stop: %s", st)
	}
	d.must("rm", "svc")

	// What went wrong reaches the user, not "exit status 1: unknown".
	out, err := d.run(append(run, "--rm", ref, "/no/such/program")...)
	if err == nil || !strings.Contains(out, "/no/such/program") {
		t.Errorf("a missing program: %v: %q (want an error naming it)", err, out)
	}
	if out := d.must("ps", "-aq"); strings.TrimSpace(out) != "" {
		t.Errorf("containers left: %q", out)
	}
	if left, _ := os.ReadDir(filepath.Join(d.dir, "exec", "runtime-lodge", "moby")); len(left) != 0 {
		t.Errorf("lodge-runtime state left under Docker's runtime root: %v", left)
	}
}
