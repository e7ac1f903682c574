package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctrd is a private containerd (Debian's 1.6, or 2.x with its erofs
// snapshotter): its runc shim drives lodge-runtime instead of runc, and
// containerd-shim-lodge-v2 is in its PATH (runtime io.containerd.lodge.v2,
// CRI handler "lodge").
type ctrd struct {
	t       *testing.T
	dir     string
	runtime string
	cri     bool
	bin     string // containerd
	ctrBin  string // its ctr
	snap    string // the snapshotter images unpack into ("": containerd's default)
	env     []string
	cmd     *exec.Cmd
	logf    *os.File
	ns      string // ctr's namespace
}

// shimState is where the lodge shims of a test's containerd keep pod state.
func (c *ctrd) shimState() string { return filepath.Join(c.dir, "lodge-shim") }

func startContainerd(t *testing.T) *ctrd { return startContainerdWith(t, false) }

// startContainerdWith starts containerd, with its CRI plugin if cri (CNI:
// a bridge lodgetest0 on 10.99.0.0/24, gateway 10.99.0.1); env is added to
// its environment (and so to its shims').
func startContainerdWith(t *testing.T, cri bool, env ...string) *ctrd {
	if _, err := exec.LookPath("containerd"); err != nil {
		if os.Getenv("LODGE_INTEGRATION") != "" {
			t.Fatal("containerd not installed (make setup installs it)")
		}
		t.Skip("containerd not installed")
	}
	c := newCtrd(t, cri, envOr("LODGE_TEST_CONTAINERD", "containerd"), envOr("LODGE_TEST_CTR", "ctr"), env)
	cfg := c.configHead(2)
	if !cri {
		cfg += "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
	} else {
		// Debug: shims forward their guests' agent logs (see TestShimCRIPod).
		cfg += fmt.Sprintf(`[debug]
  level = "debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "lodge"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lodge]
    runtime_type = "io.containerd.lodge.v2"
`, pauseRef, c.cniConf())
	}
	c.start(cfg)
	return c
}

// containerd2Dir holds containerd 2.x and its ctr (scripts/install-deps.sh
// builds them there; LODGE_TEST_CONTAINERD2_DIR names another).
const containerd2Dir = "/usr/local/lib/lodge-test/containerd-v2.4.2"

// startContainerd2Erofs starts containerd 2.x with its CRI plugin and its
// erofs snapshotter: images unpack into erofs layer images (mkfs.erofs
// from a walked directory: Debian 12's erofs-utils has no tar mode, which
// the erofs differ needs), and containers' roots are overlays of those
// images' mounts.
func startContainerd2Erofs(t *testing.T) *ctrd {
	dir := envOr("LODGE_TEST_CONTAINERD2_DIR", containerd2Dir)
	_, err1 := os.Stat(filepath.Join(dir, "containerd"))
	_, err2 := exec.LookPath("mkfs.erofs")
	if err1 != nil || err2 != nil {
		if os.Getenv("LODGE_INTEGRATION") != "" {
			t.Fatalf("containerd 2.x in %s or mkfs.erofs missing (make setup installs them): %v %v", dir, err1, err2)
		}
		t.Skip("containerd 2.x or mkfs.erofs missing")
	}
	c := newCtrd(t, true, filepath.Join(dir, "containerd"), filepath.Join(dir, "ctr"), nil)
	c.snap = "erofs"
	c.start(c.configHead(3) + fmt.Sprintf(`[debug]
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "erofs"
    differ = "walking"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "erofs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "lodge"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.lodge]
    runtime_type = "io.containerd.lodge.v2"
`, filepath.Join(c.dir, "opt"), pauseRef, c.cniConf()))
	return c
}

// newCtrd is a containerd to be started from binary bin (ctrBin its ctr),
// in a directory of the test's.
func newCtrd(t *testing.T, cri bool, bin, ctrBin string, env []string) *ctrd {
	lodgeBin := binDir(t)
	c := &ctrd{t: t, dir: t.TempDir(), runtime: filepath.Join(lodgeBin, "lodge-runtime"), cri: cri,
		bin: bin, ctrBin: ctrBin, ns: "lodge-test"}
	if cri {
		c.ns = "k8s.io"
	}
	c.env = append(append(os.Environ(), "PATH="+lodgeBin+":"+os.Getenv("PATH"), "LODGE_SHIM_STATE="+c.shimState()), env...)
	return c
}

// configHead starts a containerd configuration of this version: its
// directories and sockets in the test's directory.
func (c *ctrd) configHead(version int) string {
	return fmt.Sprintf("version = %d\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		version, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock(), c.sock()+".ttrpc")
}

// cniConf writes the CRI tests' CNI network and returns its directory.
func (c *ctrd) cniConf() string {
	dir := filepath.Join(c.dir, "net.d")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "10-lodgetest.conflist"), []byte(fmt.Sprintf(`{
  "cniVersion": "1.0.0", "name": "lodgetest",
  "plugins": [{"type": "bridge", "bridge": "lodgetest0", "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24", "gateway": "10.99.0.1"}]],
             "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}}]
}`, filepath.Join(c.dir, "cni-ipam"))), 0o644)
	return dir
}

// start writes containerd's configuration, runs it, arranges its
// cleanup and waits until it answers.
func (c *ctrd) start(cfg string) {
	t := c.t
	os.WriteFile(filepath.Join(c.dir, "config.toml"), []byte(cfg), 0o644)
	c.logf, _ = os.Create(filepath.Join(c.dir, "containerd.log"))
	c.run()
	t.Cleanup(func() {
		// Shims and the VMs they drove must be gone before containerd is.
		if c.cri {
			for _, p := range strings.Fields(c.crictlOut("pods", "-q")) {
				c.crictlOut("stopp", p)
				c.crictlOut("rmp", "-f", p)
			}
		}
		for _, id := range strings.Fields(c.ctrOut("containers", "ls", "-q")) {
			c.ctrOut("tasks", "kill", "-s", "KILL", id)
			time.Sleep(500 * time.Millisecond)
			c.ctrOut("tasks", "rm", "-f", id)
			c.ctrOut("containers", "rm", id)
		}
		c.stop()
		c.logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("containerd.log (tail):\n%s", b)
		}
		if procs := processesMentioning(c.dir); len(procs) > 0 {
			t.Errorf("processes left behind: %v", procs)
		}
		for _, m := range mountsBelow(c.dir) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if c.cri {
			exec.Command("ip", "link", "del", "lodgetest0").Run()
		}
	})
}

// run runs containerd and waits until it answers.
func (c *ctrd) run() {
	c.t.Helper()
	c.cmd = exec.Command(c.bin, "--config", filepath.Join(c.dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr, c.cmd.Env = c.logf, c.logf, c.env
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := c.ctr("version"); err == nil {
			break
		} else if i > 100 {
			c.t.Fatalf("containerd did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends containerd (its shims keep running).
func (c *ctrd) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.cmd.Wait()
}

// envOr returns $name, or def. LODGE_TEST_CONTAINERD and LODGE_TEST_CTR
// point the tests at another containerd (e.g. 2.x) and its ctr.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (c *ctrd) sock() string { return filepath.Join(c.dir, "containerd.sock") }

func (c *ctrd) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctrBin, append([]string{"--address", c.sock(), "-n", c.ns}, args...)...)
	out, err := cmd.CombinedOutput()
	return dropDeprecations(string(out)), err
}

// dropDeprecations removes containerd 2.x's cgroup v1 deprecation warning,
// which ctr prints on every call on this host.
func dropDeprecations(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(l, "DEPRECATION") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func (c *ctrd) ctrOut(args ...string) string {
	out, _ := c.ctr(args...)
	return out
}

func (c *ctrd) runArgs() []string {
	return []string{"--runtime", "io.containerd.runc.v2", "--runc-binary", c.runtime,
		"--runc-root", filepath.Join(c.dir, "lodge-root")}
}

func mountsBelow(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

// checkRunBasics runs `ctr run --rm` with runArgs (which runtime) and
// checks output in a guest kernel, an exit status, env, cwd and uid.
func (c *ctrd) checkRunBasics(ref string, runArgs ...string) {
	t := c.t
	t.Helper()
	run := func(args ...string) (string, error) {
		a := append([]string{"run", "--rm"}, runArgs...)
		return c.ctr(append(a, args...)...)
	}
	if out, err := run(ref, "echo1", "sh", "-c", "echo hello-$((6*7)); uname -r"); err != nil ||
		!strings.Contains(out, "hello-42") || strings.Contains(out, hostKernel(t)) {
		t.Errorf("run echo (want hello-42 and a guest kernel): %v: %q", err, out)
	}
	if _, err := run(ref, "exit3", "sh", "-c", "exit 3"); err == nil {
		t.Error("exit 3 reported as success")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Errorf("exit 3 reported as %v", err)
	}
	if out, err := run("--env", "FOO=bar", "--cwd", "/tmp", ref, "env1", "sh", "-c", "echo $FOO $(pwd) $(id -u)"); err != nil ||
		strings.TrimSpace(out) != "bar /tmp 0" {
		t.Errorf("env/cwd/uid: %v: %q", err, out)
	}
}

// TestContainerdRuncShim: containerd's own runc shim, pointed at
// lodge-runtime, runs tasks in Lodge VMs (the ctr smoke checks).
func TestContainerdRuncShim(t *testing.T) {
	c := startContainerd(t)
	ref := "docker.io/library/busybox:lodge"
	c.importImage(ref)
	c.checkRunBasics(ref, c.runArgs()...)

	a := append([]string{"run", "-d"}, c.runArgs()...)
	if out, err := c.ctr(append(a, ref, "svc", "sh", "-c", `trap "exit 7" TERM; while :; do sleep 0.2; done`)...); err != nil {
		t.Fatalf("run -d: %v: %s", err, out)
	}
	if out := c.ctrOut("tasks", "ls"); !strings.Contains(out, "RUNNING") {
		t.Errorf("tasks ls: %q", out)
	}
	if out, err := c.ctr("tasks", "exec", "--exec-id", "e1", "svc", "sh", "-c", "echo exec-ok"); err != nil || !strings.Contains(out, "exec-ok") {
		t.Errorf("tasks exec: %v: %q", err, out)
	}
	if out, err := c.ctr("tasks", "kill", "-s", "TERM", "svc"); err != nil {
		t.Errorf("kill: %v: %s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(c.ctrOut("tasks", "ls"), "STOPPED") {
		if time.Now().After(deadline) {
			t.Fatalf("task not stopped after TERM: %s", c.ctrOut("tasks", "ls"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := c.ctr("tasks", "rm", "svc"); err != nil {
		t.Errorf("tasks rm: %v: %s", err, out)
	}
	if out, err := c.ctr("containers", "rm", "svc"); err != nil {
		t.Errorf("containers rm: %v: %s", err, out)
	}
}
