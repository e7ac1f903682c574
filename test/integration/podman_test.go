package integration

import (
	"archive/tar"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/testbundle"
)

// tool runs a command-line client (podman, docker) with leading
// arguments of its own.
type tool struct {
	t    *testing.T
	name string
	args []string
}

func (c tool) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.name, append(append([]string(nil), c.args...), args...)...).CombinedOutput()
	return string(out), err
}

func (c tool) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("%s %v: %v\n%s", c.name, args, err, out)
	}
	return out
}

// podman runs Debian's podman with private storage and lodge-runtime.
type podman struct{ tool }

func newPodman(t *testing.T) *podman {
	bin := binDir(t)
	if _, err := exec.LookPath("podman"); err != nil {
		if os.Getenv("LODGE_INTEGRATION") != "" {
			t.Fatal("podman not installed (make setup installs it)")
		}
		t.Skip("podman not installed")
	}
	dir := t.TempDir()
	p := &podman{tool{t: t, name: "podman", args: []string{"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"),
		"--runtime", filepath.Join(bin, "lodge-runtime"), "--cgroup-manager", "cgroupfs", "--events-backend", "file"}}}
	t.Cleanup(func() {
		p.run("rm", "--all", "--force")
		exec.Command("podman", append(p.args, "system", "reset", "--force")...).Run()
		if procs := processesMentioning(dir); len(procs) > 0 {
			t.Errorf("processes left behind: %v", procs)
		}
	})
	return p
}

// tarDir writes dir as a tar archive (what `podman import` loads).
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if d.Type()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name, _ = filepath.Rel(dir, path)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(path)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// rootfsTar is the test root filesystem as a tar (what `podman import`
// and `docker import` load).
func rootfsTar(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := testbundle.Rootfs(filepath.Join(dir, "rootfs")); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "busybox.tar")
	if err := tarDir(filepath.Join(dir, "rootfs"), img); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestPodman drives lodge-runtime through Podman: run --rm, run -d, exec,
// logs, stop, rm.
func TestPodman(t *testing.T) {
	p := newPodman(t)
	img := rootfsTar(t)
	p.must("import", "--change", `CMD ["sh"]`, img, "localhost/lodge-busybox:test")

	out := p.must("run", "--rm", "--network", "none", "localhost/lodge-busybox:test", "sh", "-c", "echo hello from podman; uname -r")
	if !strings.Contains(out, "hello from podman") || strings.Contains(out, hostKernel(t)) {
		t.Errorf("podman run --rm printed %q (host kernel %s)", out, hostKernel(t))
	}
	if out, err := p.run("run", "--rm", "--network", "none", "localhost/lodge-busybox:test", "sh", "-c", "exit 9"); err == nil {
		t.Errorf("exit 9 reported as success: %s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 9 {
		t.Errorf("exit 9 reported as %v", err)
	}

	// -t: conmon takes the terminal's master from lodge-runtime's console
	// socket; the guest's pty is the line discipline, so lines end in
	// \r\n once (the host's pty relays them raw).
	if out := p.must("run", "--rm", "-t", "--network", "none", "localhost/lodge-busybox:test", "sh", "-c", "tty; echo one; echo two"); !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "one\r\ntwo\r\n") || strings.Contains(out, "\r\r") {
		t.Errorf("podman run -t printed %q, want a tty and lines ending in \\r\\n", out)
	}

	p.must("run", "-d", "--name", "svc", "--network", "none", "localhost/lodge-busybox:test",
		"sh", "-c", `echo started; trap 'echo stopping; exit 0' TERM; while :; do sleep 0.2; done`)
	if out := p.must("exec", "svc", "sh", "-c", "echo exec-ok; cat /etc/hostname"); !strings.Contains(out, "exec-ok") {
		t.Errorf("podman exec printed %q", out)
	}
	if out := p.must("ps", "--format", "{{.Names}} {{.Status}}"); !strings.Contains(out, "svc Up") {
		t.Errorf("podman ps: %q", out)
	}
	p.must("stop", "-t", "20", "svc")
	logs := p.must("logs", "svc")
	if !strings.Contains(logs, "started") || !strings.Contains(logs, "stopping") {
		t.Errorf("podman logs: %q (want the start and the graceful stop)", logs)
	}
	p.must("rm", "svc")
	if out := p.must("ps", "-a", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("containers left: %q", out)
	}
}
