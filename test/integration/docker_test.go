package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dockerd is a private Docker daemon (Debian's docker.io) with lodge-runtime
// as runtime "lodge", its own data and exec roots and no iptables rules:
// it changes nothing on the host outside its directory. Its default
// network is bridge, a bridge the test made, or none.
type dockerd struct {
	tool
	dir  string
	sock string
}

func startDockerd(t *testing.T, bridge string) *dockerd {
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
		"--bridge", bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false",
		// Published ports: without iptables, docker-proxy relays them.
		fmt.Sprintf("--userland-proxy=%v", bridge != "none"), "--cgroup-parent", cgParent,
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
	d := startDockerd(t, "none")
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
	d.checkRuntimeRootEmpty()
}

// runtimeRoot is the state root Docker gives lodge-runtime.
func (d *dockerd) runtimeRoot() string {
	roots, _ := filepath.Glob(filepath.Join(d.dir, "exec", "runtime-*", "moby"))
	if len(roots) != 1 {
		d.t.Fatalf("Docker's runtime roots: %v (want one)", roots)
	}
	return roots[0]
}

func (d *dockerd) checkRuntimeRootEmpty() {
	if left, _ := os.ReadDir(d.runtimeRoot()); len(left) != 0 {
		d.t.Errorf("lodge-runtime state left under Docker's runtime root: %v", left)
	}
}

// TestDockerBridge: Docker's own bridge network (its libnetwork-setkey
// hook puts the container's veth into the namespace of the pid it is
// given, the supervisor's own, whose tap the VM's NIC already holds),
// through a clone: the container has its address and route, two VMs talk
// over the bridge, and a published port (docker-proxy) reaches the
// container from the host.
func TestDockerBridge(t *testing.T) {
	br := fmt.Sprintf("lodgedk%d", os.Getpid()%100000)
	subnet := fmt.Sprintf("10.198.%d", os.Getpid()%250)
	for _, args := range [][]string{{"link", "add", br, "type", "bridge"}, {"addr", "add", subnet + ".1/24", "dev", br}, {"link", "set", br, "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", br).Run()
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", br).Run() })
	d := startDockerd(t, br)
	img := rootfsTar(t)
	const ref = "lodge.test/busybox:bridge"
	d.must("import", "--change", `CMD ["sh"]`, img, ref)
	port := freePort(t)

	id := strings.TrimSpace(d.must("run", "--runtime", "lodge", "-d", "--name", "web", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), ref,
		"sh", "-c", "mkdir /www && echo served-from-a-vm > /www/index.html && exec httpd -f -p 80 -h /www"))
	ip := strings.TrimSpace(d.must("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"))
	if !strings.HasPrefix(ip, subnet+".") {
		t.Fatalf("the container's address %q is not on the bridge %s.0/24", ip, subnet)
	}
	st := rtState(t, d.runtimeRoot(), id)
	if st.Annotations["io.lodge.start"] != "clone" {
		t.Errorf("Docker's container did not start as a clone: %v", st.Annotations)
	}
	out := d.must("run", "--runtime", "lodge", "--rm", ref, "sh", "-c",
		"ip -4 addr show eth0; ip route; for i in 1 2 3 4 5 6 7 8 9 10; do timeout 10 wget -q -O- http://"+ip+"/ && exit 0; sleep 1; done; exit 1")
	if !strings.Contains(out, "served-from-a-vm") || !strings.Contains(out, "default via "+subnet+".1") {
		t.Errorf("from a second container on the bridge:\n%s", out)
	}
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if body = string(b); strings.Contains(body, "served-from-a-vm") {
				break
			}
		}
	}
	if !strings.Contains(body, "served-from-a-vm") {
		t.Errorf("GET the published port 127.0.0.1:%d: %q", port, body)
	}
	d.must("rm", "-f", "web")
	if out := d.must("ps", "-aq"); strings.TrimSpace(out) != "" {
		t.Errorf("containers left: %q", out)
	}
	d.checkRuntimeRootEmpty()
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", br).CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("interfaces left on the bridge: %s", out)
	}
}

// rtState is lodge-runtime's state of a container under root.
func rtState(t *testing.T, root, id string) ociState {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir(t), "lodge-runtime"), "--root", root, "state", id).Output()
	if err != nil {
		t.Fatalf("lodge-runtime state %s: %v", id, err)
	}
	var s ociState
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// freePort is a TCP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
