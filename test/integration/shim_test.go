package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/layers"
	"github.com/lodgeruntime/lodge/internal/testbundle"
)

// pauseRef is the sandbox image the CRI tests import (busybox sleeping).
const pauseRef = "lodge.test/pause:1"

const lodgeRuntime = "io.containerd.lodge.v2"

// importImage builds a busybox image named ref with Cmd cmd and imports it.
func (c *ctrd) importImage(ref string, cmd ...string) { c.importImageWith(ref, nil, cmd...) }

// importImageWith is importImage with more files: prepare adds them to the
// image's rootfs.
func (c *ctrd) importImageWith(ref string, prepare func(rootfs string), cmd ...string) {
	c.t.Helper()
	dir := c.t.TempDir()
	if err := testbundle.Rootfs(filepath.Join(dir, "rootfs")); err != nil {
		c.t.Fatal(err)
	}
	if prepare != nil {
		prepare(filepath.Join(dir, "rootfs"))
	}
	layer := filepath.Join(dir, "layer.tar")
	if err := tarDir(filepath.Join(dir, "rootfs"), layer); err != nil {
		c.t.Fatal(err)
	}
	img := filepath.Join(dir, "image.tar")
	if err := writeOCIArchive(img, layer, ref, cmd...); err != nil {
		c.t.Fatal(err)
	}
	args := []string{"images", "import"}
	if c.snap != "" {
		args = append(args, "--snapshotter", c.snap)
	}
	if out, err := c.ctr(append(args, img)...); err != nil {
		c.t.Fatalf("import: %v: %s", err, out)
	}
}

// waitTask waits until ctr lists the task with this status.
func (c *ctrd) waitTask(id, status string) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		out := c.ctrOut("tasks", "ls")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == id && f[2] == status {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s not %s: %s", id, status, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// podRecords reads the lodge shims' pod records (one per running VM).
func (c *ctrd) podRecords() []podRecord {
	files, _ := filepath.Glob(filepath.Join(c.shimState(), "*", "pod.json"))
	var out []podRecord
	for _, f := range files {
		var r podRecord
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

type podRecord struct {
	Sandbox string `json:"sandbox"`
	Shim    struct {
		Pid int `json:"pid"`
	} `json:"shim"`
	VMProcs []struct {
		Pid int `json:"pid"`
	} `json:"vm_procs"`
}

// startContainer creates a container from a CRI container config in pod
// (made from podCfg) and starts it.
func (c *ctrd) startContainer(pod, podCfg string, cfg map[string]any) string {
	c.t.Helper()
	name := cfg["metadata"].(map[string]any)["name"]
	id, err := c.crictl("create", pod, writeJSON(c.t, cfg), podCfg)
	if err != nil {
		c.t.Fatalf("create %s: %v", name, err)
	}
	if _, err := c.crictl("start", id); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	return id
}

// removePod stops and removes a pod through CRI and checks that nothing of
// it is left.
func (c *ctrd) removePod(pod string) {
	c.t.Helper()
	if _, err := c.crictl("stopp", pod); err != nil {
		c.t.Errorf("stopp: %v", err)
	}
	if _, err := c.crictl("rmp", pod); err != nil {
		c.t.Errorf("rmp: %v", err)
	}
	c.assertPodStateGone()
}

// assertPodStateGone checks that no shim, VM or pod state is left.
func (c *ctrd) assertPodStateGone() {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		entries, _ := os.ReadDir(c.shimState())
		procs := processesMentioning(c.shimState())
		shims := processesMentioning("containerd-shim-lodge-v2 -namespace " + c.ns + " -address " + c.sock())
		if len(entries) == 0 && len(procs) == 0 && len(shims) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("left behind: state %v, processes %v %v", entries, procs, shims)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestShimCtr: containerd runs tasks through containerd-shim-lodge-v2, a VM
// per container: output, exit codes, env, stdin, exec, pause, metrics, kill.
func TestShimCtr(t *testing.T) {
	c := startContainerd(t)
	ref := "docker.io/library/busybox:lodge"
	c.importImage(ref)
	c.checkRunBasics(ref, "--runtime", lodgeRuntime)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctrBin, "--address", c.sock(), "-n", c.ns, "run", "--rm", "--runtime", lodgeRuntime,
		ref, "stdin1", "sh", "-c", "read l; echo got-$l")
	cmd.Stdin = strings.NewReader("piped\n")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(dropDeprecations(string(out))) != "got-piped" {
		t.Errorf("stdin: %v: %q", err, out)
	}

	if out, err := c.ctr("run", "-d", "--runtime", lodgeRuntime, ref, "svc", "sh", "-c",
		`trap "exit 7" TERM; while :; do sleep 0.2; done`); err != nil {
		t.Fatalf("run -d: %v: %s", err, out)
	}
	c.waitTask("svc", "RUNNING")
	if out, err := c.ctr("tasks", "exec", "--exec-id", "e1", "svc", "sh", "-c", "echo exec-ok; exit 4"); !strings.Contains(out, "exec-ok") {
		t.Errorf("tasks exec: %v: %q", err, out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
		t.Errorf("exec exit 4 reported as %v", err)
	}
	if out, err := c.ctr("tasks", "pause", "svc"); err != nil {
		t.Errorf("pause: %v: %s", err, out)
	}
	c.waitTask("svc", "PAUSED")
	if out, err := c.ctr("tasks", "resume", "svc"); err != nil {
		t.Errorf("resume: %v: %s", err, out)
	}
	c.waitTask("svc", "RUNNING")
	if out, err := c.ctr("tasks", "metrics", "svc"); err != nil || !strings.Contains(out, "memory.usage_in_bytes") && !strings.Contains(out, "memory.usage") {
		t.Errorf("metrics: %v: %s", err, out)
	}
	if out, err := c.ctr("tasks", "ps", "svc"); err != nil || len(strings.Split(strings.TrimSpace(out), "\n")) < 2 {
		t.Errorf("tasks ps: %v: %s", err, out)
	}
	if out, err := c.ctr("tasks", "kill", "-s", "TERM", "svc"); err != nil {
		t.Errorf("kill: %v: %s", err, out)
	}
	c.waitTask("svc", "STOPPED")
	if out, err := c.ctr("tasks", "rm", "svc"); err != nil {
		t.Errorf("tasks rm: %v: %s", err, out)
	}
	if out, err := c.ctr("containers", "rm", "svc"); err != nil {
		t.Errorf("containers rm: %v: %s", err, out)
	}
	c.assertPodStateGone()
}

// TestShimFaults: QEMU killed, the shim killed, containerd restarted.
func TestShimFaults(t *testing.T) {
	c := startContainerd(t)
	ref := "docker.io/library/busybox:lodge"
	c.importImage(ref)
	runD := func(id string) podRecord {
		t.Helper()
		if out, err := c.ctr("run", "-d", "--runtime", lodgeRuntime, ref, id, "sh", "-c", "while :; do sleep 0.5; done"); err != nil {
			t.Fatalf("run -d %s: %v: %s", id, err, out)
		}
		c.waitTask(id, "RUNNING")
		for _, r := range c.podRecords() {
			if r.Sandbox == id && len(r.VMProcs) > 0 {
				return r
			}
		}
		t.Fatalf("no pod record for %s", id)
		return podRecord{}
	}
	remove := func(id string) {
		t.Helper()
		if out, err := c.ctr("tasks", "rm", "-f", id); err != nil && !strings.Contains(out, "not found") {
			t.Errorf("tasks rm %s: %v: %s", id, err, out)
		}
		if out, err := c.ctr("containers", "rm", id); err != nil {
			t.Errorf("containers rm %s: %v: %s", id, err, out)
		}
	}

	t.Run("qemu killed", func(t *testing.T) {
		r := runD("vmdies")
		syscall.Kill(r.VMProcs[0].Pid, syscall.SIGKILL)
		c.waitTask("vmdies", "STOPPED")
		out := c.ctrOut("tasks", "ls")
		if !strings.Contains(out, "vmdies") {
			t.Fatalf("task gone: %s", out)
		}
		// The exit status is not 0: ctr task delete warns about it.
		if out, err := c.ctr("tasks", "rm", "vmdies"); err != nil || !strings.Contains(out, "non-zero exit code") {
			t.Errorf("tasks rm after VM death: %v: %s", err, out)
		}
		c.ctr("containers", "rm", "vmdies")
		c.assertPodStateGone()
	})

	t.Run("shim killed", func(t *testing.T) {
		r := runD("shimdies")
		syscall.Kill(r.Shim.Pid, syscall.SIGKILL)
		deadline := time.Now().Add(time.Minute)
		for strings.Contains(c.ctrOut("tasks", "ls"), "RUNNING") {
			if time.Now().After(deadline) {
				t.Fatalf("containerd still sees the task running: %s", c.ctrOut("tasks", "ls"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		remove("shimdies")
		c.assertPodStateGone()
		if m := mountsBelow(c.dir); len(m) > 0 {
			t.Errorf("mounts left: %v", m)
		}
	})

	t.Run("containerd restarted", func(t *testing.T) {
		r := runD("survivor")
		c.stop()
		c.run()
		c.waitTask("survivor", "RUNNING")
		if out, err := c.ctr("tasks", "exec", "--exec-id", "after", "survivor", "echo", "still-here"); err != nil || !strings.Contains(out, "still-here") {
			t.Errorf("exec after restart: %v: %q", err, out)
		}
		if rs := c.podRecords(); len(rs) != 1 || rs[0].Shim.Pid != r.Shim.Pid {
			t.Errorf("the pod's shim changed across the restart: %+v", rs)
		}
		c.ctr("tasks", "kill", "-s", "KILL", "survivor")
		c.waitTask("survivor", "STOPPED")
		remove("survivor")
		c.assertPodStateGone()
	})
}

// crictl runs crictl against the test's containerd.
func (c *ctrd) crictl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sock := "unix://" + c.sock()
	cmd := exec.CommandContext(ctx, "crictl", append([]string{"-r", sock, "-i", sock, "-t", "2m"}, args...)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	return strings.TrimSpace(string(out)), err
}

func (c *ctrd) crictlOut(args ...string) string {
	out, _ := c.crictl(args...)
	return out
}

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	b, _ := json.Marshal(v)
	p := filepath.Join(t.TempDir(), "x.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestShimCRIPod: a Kubernetes-style pod through CRI (handler lodge): one
// VM for the pod, its containers inside; the pod is on the CNI network
// (reachable from the host, reaches the host), containers talk over
// localhost; exec, logs, stop and remove leave nothing behind.
func TestShimCRIPod(t *testing.T) { shimCRIPod(t, false) }

// TestShimCRIPooledPod: the same pod through a pooled clone ([template]
// pool = 1; a first pod fills the pool): the clone's tap is swapped into
// the pod's namespace, its QEMU and keeper join the pod's cgroup, and the
// keeper ends the VM with the shim.
func TestShimCRIPooledPod(t *testing.T) { shimCRIPod(t, true) }

func shimCRIPod(t *testing.T, pooled bool) {
	needCrictl(t)
	var env []string
	tdir := filepath.Join(t.TempDir(), "templates")
	// Made before containerd starts, so removed after it stopped (and its
	// shims, which join it, are gone).
	podCg := makeHostCgroup(t, fmt.Sprintf("lodgetest-pod-%d", os.Getpid()))
	if pooled {
		cfg := filepath.Join(t.TempDir(), "config.toml")
		os.WriteFile(cfg, []byte(poolConfig(t, tdir, 1)), 0o644) // drained after containerd stops
		env = append(env, "LODGE_CONFIG="+cfg)
	}
	c := startContainerdWith(t, true, env...)
	ref := "lodge.test/busybox:1"
	c.importImage(pauseRef, "sleep", "2147483647")
	c.importImage(ref)
	if pooled { // a first pod starts the pool's keeper
		filler, err := c.crictl("runp", "--runtime", "lodge", writeJSON(t, map[string]any{
			"metadata": map[string]any{"name": "filler", "namespace": "lodge", "uid": "uid-filler", "attempt": 1}}))
		if err != nil {
			t.Fatalf("runp: %v", err)
		}
		c.removePod(filler)
		waitPooled(t, tdir)
	}
	logs := t.TempDir()
	podCfg := writeJSON(t, map[string]any{
		"metadata":      map[string]any{"name": "web", "namespace": "lodge", "uid": "uid-web", "attempt": 1},
		"hostname":      "webpod",
		"log_directory": logs,
		"linux": map[string]any{"cgroup_parent": podCg,
			"sysctls": map[string]string{"kernel.shm_rmid_forced": "1", "kernel.msgmax": "12345"}},
	})
	pod, err := c.crictl("runp", "--runtime", "lodge", podCfg)
	if err != nil {
		t.Fatalf("runp: %v", err)
	}
	if st := c.crictlOut("inspectp", "-o", "go-template", "--template", "{{.status.state}}", pod); st != "SANDBOX_READY" {
		t.Fatalf("pod state %q", st)
	}
	rs := c.podRecords()
	if len(rs) != 1 || len(rs[0].VMProcs) == 0 {
		t.Fatalf("want one VM for the pod, records: %+v", rs)
	}
	// The pod (one CNI interface) started as a clone of a template: its
	// QEMU restored a saved state, and its NIC slot took the veth's MAC.
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rs[0].VMProcs[0].Pid)); !bytes.Contains(b, []byte("-incoming\x00defer")) {
		t.Errorf("the pod's VM is not a clone of a template: %q", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
	}
	if pooled { // a pooled clone: its QEMU's parent is its keeper
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", rs[0].VMProcs[0].Pid))
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		cmd, _ := os.ReadFile("/proc/" + f[1] + "/cmdline")
		if !bytes.Contains(cmd, []byte("__lodge-pool-keeper")) {
			t.Fatalf("the pod's VM is not a pooled clone: its parent is %q", bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		}
		if b, _ := os.ReadFile("/proc/" + f[1] + "/cgroup"); !strings.Contains(string(b), ":"+podCg+"\n") {
			t.Errorf("the pooled clone's keeper is not in the pod cgroup %s:\n%s", podCg, b)
		}
	}
	// The VM is fenced in the pod's host cgroup (the kubelet's pod cgroup).
	for _, p := range rs[0].VMProcs {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid)); !strings.Contains(string(b), ":"+podCg+"\n") {
			t.Errorf("VM process %d is not in the pod cgroup %s:\n%s", p.Pid, podCg, b)
		}
	}
	ip := c.crictlOut("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod)
	if net.ParseIP(ip) == nil {
		t.Fatalf("pod IP %q", ip)
	}

	newCtrWith := func(name string, linux map[string]any, cmd ...string) string {
		t.Helper()
		return c.startContainer(pod, podCfg, map[string]any{
			"metadata": map[string]any{"name": name}, "image": map[string]any{"image": ref},
			"command": cmd, "log_path": name + ".log", "linux": linux,
		})
	}
	newCtr := func(name string, cmd ...string) string { return newCtrWith(name, map[string]any{}, cmd...) }
	web := newCtr("web", "sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www")
	images := c.layerImages()
	client := newCtr("client", "sleep", "3600")
	if rs := c.podRecords(); len(rs) != 1 {
		t.Errorf("containers of one pod must share its VM; records: %+v", rs)
	}
	// Roots are built in the guest from erofs images of the image's
	// layers, each converted once: the second container of the same image
	// found its layers' images made.
	if len(images) == 0 {
		t.Errorf("no layer images made for this containerd's snapshots")
	}
	if again := c.layerImages(); !maps.Equal(again, images) {
		t.Errorf("layer images changed when a second container of the same image started:\nbefore %v\nafter  %v", images, again)
	}
	if out, err := c.crictl("exec", client, "sh", "-c", "grep ' / / ' /proc/self/mountinfo"); err != nil || !strings.Contains(out, " - overlay overlay ") || !strings.Contains(out, "lowerdir=/run/lodge/l/") {
		t.Errorf("the container's root is not an overlay of layer images: %v: %q", err, out)
	}
	// Containers of one image share its layers' mounts in the guest (one
	// loop device and one page cache per layer, not one per container).
	if lw, lc := c.rootLower(web), c.rootLower(client); lw != lc {
		t.Errorf("two containers of one image do not share its layers' mounts: web %q, client %q", lw, lc)
	}
	// A write in one container's root is not seen by another of the same
	// image, nor by the host's snapshots.
	if out, err := c.crictl("exec", client, "sh", "-c", "test -e /www && echo visible || echo invisible"); err != nil || out != "invisible" {
		t.Errorf("web's /www from client: %v: %q", err, out)
	}
	if m, _ := filepath.Glob(filepath.Join(c.dir, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs", "www")); len(m) != 0 {
		t.Errorf("a container's write reached the host's snapshots: %v", m)
	}

	// The host reaches the pod on its IP.
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + ip + ":8080/")
		if err == nil {
			b := make([]byte, 100)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			body = string(b[:n])
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if strings.TrimSpace(body) != "hello-from-pod" {
		t.Errorf("GET http://%s:8080/ from the host: %q", ip, body)
	}
	// crictl port-forward reaches the pod's server.
	if got := portForward(t, c, pod, 8080); got != "hello-from-pod" {
		t.Errorf("port-forward: %q", got)
	}
	// Containers of the pod talk over localhost.
	if out, err := c.crictl("exec", client, "wget", "-qO-", "http://127.0.0.1:8080/"); err != nil || out != "hello-from-pod" {
		t.Errorf("localhost between containers: %v: %q", err, out)
	}
	// The pod reaches a server on the host side of its network.
	l, err := net.Listen("tcp", "10.99.0.1:0")
	if err != nil {
		t.Fatalf("listen on the bridge: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello-from-host") })}
	go srv.Serve(l)
	defer srv.Close()
	if out, err := c.crictl("exec", client, "wget", "-qO-", "http://"+l.Addr().String()+"/"); err != nil || out != "hello-from-host" {
		t.Errorf("pod -> host: %v: %q", err, out)
	}
	if out, err := c.crictl("exec", client, "hostname"); err != nil || out != "webpod" {
		t.Errorf("hostname: %v: %q", err, out)
	}
	// The pod's sandbox container was made as a pod holder (no full
	// container runtime: see the agent's holder_linux.go) and holds what
	// the pod's containers share: its PID namespace (crictl's default
	// for a pod), where it is PID 1, and its IPC namespace, with the pod's
	// sysctls.
	ctrdLog, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	if !bytes.Contains(ctrdLog, []byte("pod holder created")) {
		t.Errorf("the pod's sandbox container was not made as a pod holder (no \"pod holder created\" in containerd.log)")
	}
	// Once the holder was up, the agent started its warm first step (so
	// that the pod's first container finds lodge-init's start translated).
	if !bytes.Contains(ctrdLog, []byte(`msg=\"warm first step\" pid=`)) {
		t.Errorf("the agent did not start a warm first step after the pod holder (no record of it in containerd.log)")
	}
	if out, err := c.crictl("exec", client, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"); err != nil || out != "sleep 2147483647" {
		t.Errorf("PID 1 of the pod's PID namespace: %v: %q, want the pause program", err, out)
	}
	// The holder's mount namespace holds its root alone: a container that
	// shares its PID namespace finds nothing of the guest's through it.
	if out, err := c.crictl("exec", client, "sh", "-c",
		`wc -l < /proc/1/mountinfo; [ "$(ls /proc/1/root/..)" = "$(ls /proc/1/root)" ] && echo root-is-top`); err != nil || out != "1\nroot-is-top" {
		t.Errorf("the pod holder's mounts, from a container: %v: %q, want its root alone (1 mount, nothing above it)", err, out)
	}
	if out, err := c.crictl("exec", client, "cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/kernel/msgmax"); err != nil || out != "1\n12345" {
		t.Errorf("pod sysctls in a container: %v: %q, want 1 and 12345", err, out)
	}
	if out, err := c.crictl("exec", client, "sh", "-c", "exit 5"); err == nil {
		t.Errorf("exec exit 5 reported as success: %q", out)
	}
	// A container over its memory limit is OOM-killed in the guest, and
	// CRI says so.
	hog := newCtrWith("hog", map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 15 << 20}},
		"dd", "if=/dev/zero", "of=/dev/null", "bs=40M")
	tmpl := "{{.status.state}} {{.status.reason}} {{.status.exitCode}}"
	deadline = time.Now().Add(time.Minute)
	st := ""
	for ; time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if st = c.crictlOut("inspect", "-o", "go-template", "--template", tmpl, hog); strings.HasPrefix(st, "CONTAINER_EXITED") {
			break
		}
	}
	if st != "CONTAINER_EXITED OOMKilled 137" {
		t.Errorf("memory hog: %q, want CONTAINER_EXITED OOMKilled 137", st)
	}
	if out := c.crictlOut("logs", web); !strings.Contains(out, "serving") {
		t.Errorf("logs: %q", out)
	}
	if _, err := c.crictl("stop", web); err != nil {
		t.Errorf("stop: %v", err)
	}
	if st := c.crictlOut("inspect", "-o", "go-template", "--template", "{{.status.state}}", web); st != "CONTAINER_EXITED" {
		t.Errorf("state after stop: %q", st)
	}
	// Removing containers of the image leaves its layers to those still
	// using them, and to new ones.
	for _, id := range []string{web, hog} {
		if _, err := c.crictl("rm", id); err != nil {
			t.Errorf("rm: %v", err)
		}
	}
	late := newCtr("late", "sleep", "3600")
	if ll, lc := c.rootLower(late), c.rootLower(client); ll != lc {
		t.Errorf("a container made after others of its image went does not share its layers' mount with client: %q, %q", ll, lc)
	}
	for _, id := range []string{client, late} {
		if out, err := c.crictl("exec", id, "sh", "-c", "ls /bin | wc -l; cat /etc/passwd | head -1"); err != nil || !strings.Contains(out, "root:x:0:0") {
			t.Errorf("the image's files in %s after the others of its image were removed: %v: %q", id, err, out)
		}
	}
	c.removePod(pod)

	// A pod whose shim is killed: its VM goes too, and CRI can still stop
	// and remove the pod, leaving nothing behind. Its seccomp profile
	// (RuntimeDefault, which containerd applies to the sandbox container
	// too) is more than a pod holder applies: its sandbox container is a
	// direct container trimmed to a holder's root, under the filter.
	pod2, err := c.crictl("runp", "--runtime", "lodge", writeJSON(t, map[string]any{
		"metadata": map[string]any{"name": "doomed", "namespace": "lodge", "uid": "uid-doomed", "attempt": 1},
		"linux":    map[string]any{"security_context": map[string]any{"seccomp": map[string]any{"profile_type": 0}}},
	}))
	if err != nil {
		t.Fatalf("runp: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	var made []string // the guest's records of pod2's sandbox container
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "container_id="+pod2) && strings.Contains(l, "source=guest") {
			made = append(made, l)
		}
	}
	if all := strings.Join(made, "\n"); !strings.Contains(all, `pod sandbox as a direct container with a holder's root`) ||
		!strings.Contains(all, `why=\"it asks for a seccomp filter`) || !strings.Contains(all, `init=direct`) ||
		!strings.Contains(all, `seccomp=\"compiled`) || strings.Contains(all, `writable=true`) {
		t.Errorf("a pod with a seccomp profile: its sandbox container was not made as a direct container with a holder's root, under its filter:\n%s", all)
	}
	rs = c.podRecords()
	if len(rs) != 1 {
		t.Fatalf("records: %+v", rs)
	}
	// A second pod's sandbox container reuses the pause layer's image.
	if again := c.layerImages(); !maps.Equal(again, images) {
		t.Errorf("layer images changed when a second pod started:\nbefore %v\nafter  %v", images, again)
	}
	syscall.Kill(rs[0].Shim.Pid, syscall.SIGKILL)
	if _, err := c.crictl("stopp", pod2); err != nil {
		t.Errorf("stopp after the shim died: %v", err)
	}
	if _, err := c.crictl("rmp", pod2); err != nil {
		t.Errorf("rmp after the shim died: %v", err)
	}
	c.assertPodStateGone()
}

// rootLower is the lowerdir option of container id's overlay root, as the
// container sees it.
func (c *ctrd) rootLower(id string) string {
	c.t.Helper()
	out, err := c.crictl("exec", id, "sh", "-c", "grep ' / / ' /proc/self/mountinfo")
	if i := strings.Index(out, "lowerdir="); err == nil && i >= 0 {
		return strings.SplitN(out[i:], ",", 2)[0]
	}
	c.t.Errorf("no overlay root in %s: %v: %q", id, err, out)
	return ""
}

// layerImages maps each layer image made from this containerd's snapshots
// to the image file's inode.
func (c *ctrd) layerImages() map[string]uint64 {
	c.t.Helper()
	st := &layers.Store{Dir: config.Default().Layers.Dir}
	infos, err := st.List()
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, in := range infos {
		if !strings.HasPrefix(in.Source, c.dir+"/") {
			continue
		}
		var s syscall.Stat_t
		if err := syscall.Stat(in.Path, &s); err == nil {
			out[in.Source] = s.Ino
		}
	}
	return out
}

// portForward runs `crictl port-forward POD LOCAL:port` and fetches / through
// it.
func portForward(t *testing.T, c *ctrd, pod string, port int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := l.Addr().(*net.TCPAddr).Port
	l.Close()
	sock := "unix://" + c.sock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "crictl", "-r", sock, "port-forward", pod, fmt.Sprintf("%d:%d", local, port))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; i < 50; i++ {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", local))
		if err == nil {
			b := make([]byte, 100)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			return strings.TrimSpace(string(b[:n]))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ""
}

// TestShimBadInput: what Lodge cannot do fails the task's creation with a
// message a user can act on, and leaves no VM, process or state.
func TestShimBadInput(t *testing.T) {
	c := startContainerd(t)
	ref := "docker.io/library/busybox:lodge"
	c.importImage(ref)
	run := func(args ...string) string {
		t.Helper()
		out, err := c.ctr(append([]string{"run", "--rm", "--runtime", lodgeRuntime}, args...)...)
		if err == nil {
			t.Errorf("ctr run %v succeeded: %s", args, out)
		}
		c.ctr("containers", "rm", args[len(args)-3])
		c.assertPodStateGone()
		return out
	}
	out := run("--annotation", "io.lodge.vm.vcpus=999", ref, "badvcpus", "true")
	t.Logf("bad vcpus: %s", out)
	if !strings.Contains(out, "io.lodge.vm.vcpus") {
		t.Errorf("bad vcpus annotation: %q", out)
	}
	out = run("--annotation", "io.lodge.vm.kernel=/tmp/evil", ref, "badkey", "true")
	t.Logf("bad key: %s", out)
	if !strings.Contains(out, "not a Lodge annotation") {
		t.Errorf("unknown io.lodge annotation: %q", out)
	}
}

// TestShimBootFailure: a guest that cannot boot fails the task with the
// console's words, and the shim leaves nothing behind.
func TestShimBootFailure(t *testing.T) {
	binDir(t) // skips without the integration environment
	dir := t.TempDir()
	kernel := filepath.Join(dir, "not-a-kernel")
	os.WriteFile(kernel, []byte("garbage"), 0o644)
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[guest]\nkernel = %q\n[vmm]\nboot_timeout = \"20s\"\n", kernel)), 0o644)
	t.Setenv("LODGE_CONFIG", cfg) // containerd passes it to the shim
	c := startContainerd(t)
	ref := "docker.io/library/busybox:lodge"
	c.importImage(ref)
	out, err := c.ctr("run", "--rm", "--runtime", lodgeRuntime, ref, "noboot", "true")
	t.Logf("boot failure: %s", out)
	if err == nil || !strings.Contains(out, "qemu") {
		t.Errorf("boot failure: %v: %q", err, out)
	}
	c.ctr("containers", "rm", "noboot")
	c.assertPodStateGone()
}

// makeHostCgroup creates a cgroup in every hierarchy (as the kubelet makes
// a pod's) and removes it when the test ends.
func makeHostCgroup(t *testing.T, name string) string {
	t.Helper()
	var dirs []string
	for _, h := range cgroupHierarchies() {
		d := filepath.Join(h, name)
		if err := os.Mkdir(d, 0o755); err == nil {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no cgroup hierarchy to make a pod cgroup in")
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			for i := 0; i < 50 && os.Remove(d) != nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
	return "/" + name
}

// needCrictl skips a CRI test where crictl is missing, and fails it where
// the integration run promised every tool (make setup installs crictl).
func needCrictl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("crictl"); err != nil {
		if os.Getenv("LODGE_INTEGRATION") != "" {
			t.Fatal("crictl not installed (make setup installs it)")
		}
		t.Skip("crictl not installed")
	}
}
