package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/confine"
	"github.com/lodgeruntime/lodge/internal/guestimage"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/uidlease"
	"github.com/lodgeruntime/lodge/internal/vmm/qemu"
)

// cmdCheck prints what Lodge will use on this host and fails with what to
// do when something required is missing.
func cmdCheck(ctx context.Context, cfg config.Config, log *slog.Logger, out io.Writer) error {
	line := func(k, v string) { fmt.Fprintf(out, "%-12s %s\n", k+":", v) }
	var missing []string
	req := func(k, v string, err error) {
		if err != nil {
			line(k, "MISSING: "+err.Error())
			missing = append(missing, k)
			return
		}
		line(k, v)
	}

	accel, err := host.ChooseAccel(cfg)
	req("accelerator", fmt.Sprintf("%s (%s)", accel.Accel, accel.Reason), err)

	qemuPath, err := exec.LookPath(cfg.VMM.QEMU)
	if err == nil {
		v, verr := exec.CommandContext(ctx, qemuPath, "--version").Output()
		first, _, _ := strings.Cut(string(v), "\n")
		if verr != nil {
			err = fmt.Errorf("%s --version: %w", qemuPath, verr)
		}
		req("qemu", qemuPath+" ("+first+")", err)
	} else {
		req("qemu", "", fmt.Errorf("%s not found: apt-get install qemu-system-x86", cfg.VMM.QEMU))
	}
	req("kernel", describeFile(cfg.Guest.Kernel, cfg.Guest.Dir+"/kernel.release"), statErr(cfg.Guest.Kernel))
	req("initrd", describeFile(cfg.Guest.Initrd, ""), statErr(cfg.Guest.Initrd))
	req("cgroups", cgroupMode(), nil)
	switch {
	case cfg.VMM.AgentChannel != "auto":
		line("agent link", cfg.VMM.AgentChannel+" (vmm.agent_channel in the config)")
	case transport.VsockAvailable():
		line("agent link", "vsock (/dev/vhost-vsock is available)")
	default:
		line("agent link", "virtio-serial (no /dev/vhost-vsock)")
	}
	line("templates", templateStatus(cfg))
	line("seccomp", seccompStatus(cfg))
	line("page merging", mergeStatus(cfg, "/sys/kernel/mm/ksm/run"))
	posture, err := confinementStatus(cfg)
	req("confinement", posture, err)
	if len(missing) > 0 {
		return fmt.Errorf("not ready: %s missing", strings.Join(missing, ", "))
	}
	if _, err := host.Resolve(cfg, slog.New(slog.DiscardHandler)); err != nil { // the lines above said it
		return err
	}
	fmt.Fprintln(out, "ready")
	return nil
}

// seccompStatus says where containers' seccomp profiles are compiled.
func seccompStatus(cfg config.Config) string {
	helper := filepath.Join(cfg.Guest.Dir, guestimage.SeccompHelperFile)
	if _, err := os.Stat(helper); err != nil {
		return "compiled in each guest: no " + helper + " (`lodge setup` installs it)"
	}
	return "compiled on the host by " + helper + ", kept in " + host.SeccompCacheDir
}

// templateStatus says whether sandboxes start as clones, where templates
// live and how many there are.
func templateStatus(cfg config.Config) string {
	if !cfg.Template.Enabled {
		return "disabled ([template] enabled = false): every sandbox boots a kernel"
	}
	infos, err := (&template.Store{Dir: cfg.Template.Dir, Log: slog.New(slog.DiscardHandler)}).List()
	if err != nil {
		return fmt.Sprintf("enabled, but %s cannot be read: %v", cfg.Template.Dir, err)
	}
	clones := 0
	for _, in := range infos {
		clones += in.Clones
	}
	rofile := host.FindROFile()
	memory := "read-only to clones (" + rofile + ")"
	if rofile == "" {
		memory = "WRITABLE by clones' QEMU: " + qemu.ROFileName + " is not beside this binary nor in /usr/local/lib/lodge or /usr/lib/lodge (`make build` makes it)"
	}
	pooled := "no pool"
	if p := host.PoolOf(cfg); p != nil {
		ready := 0
		for _, in := range infos {
			ready += p.Status(in.Key).Ready
		}
		pooled = fmt.Sprintf("a pool of %d per template, %d waiting, in host cgroup %s", p.Size, ready, cfg.Template.PoolCgroup)
	}
	room := ""
	shape, _ := host.TemplateClasses(cfg).Round(cfg.VMM.VCPUs, cfg.VMM.MemoryMiB)
	if err := sandbox.TemplateSpace(existingDir(cfg.Template.Dir), shape.MemoryMiB); err != nil {
		room = "; no room to build the default VM's template (its sandboxes cold-boot until there is): " + err.Error()
	}
	return fmt.Sprintf("enabled, in %s (%d built, %d clones running; built on a shape's first sandbox, `lodge template ls`; %s); their memory %s%s",
		cfg.Template.Dir, len(infos), clones, pooled, memory, room)
}

// mergeStatus says whether guests' pages can be merged with other
// sandboxes' by the host's KSM (run is its switch in sysfs).
func mergeStatus(cfg config.Config, run string) string {
	ksm := "KSM is not running on this host"
	if b, err := os.ReadFile(run); err != nil {
		ksm = "this host has no KSM"
	} else if v := strings.TrimSpace(string(b)); v == "1" {
		ksm = "KSM is running on this host"
	} else if v != "0" {
		ksm = "KSM is " + v + " on this host (" + run + ")"
	}
	if !cfg.VMM.MergePages {
		return "off (vmm.merge_pages = false): no guest's memory is offered to KSM; " + ksm
	}
	return "clones' memory is offered to KSM (vmm.merge_pages = true; " +
		"never for io.lodge.template=false sandboxes); " + ksm
}

// existingDir is dir or its nearest ancestor that exists (a template
// directory is made on the first build).
func existingDir(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			return dir
		}
		dir = filepath.Dir(dir)
	}
}

func statErr(path string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s not found: run `make setup`", path)
		}
		return err
	}
	return nil
}

func describeFile(path, releaseFile string) string {
	st, err := os.Stat(path)
	if err != nil {
		return path
	}
	s := fmt.Sprintf("%s (%.1f MiB", path, float64(st.Size())/(1<<20))
	if releaseFile != "" {
		if b, err := os.ReadFile(releaseFile); err == nil {
			s += ", " + strings.Join(strings.Fields(string(b)), " from ")
		}
	}
	return s + ")"
}

func cgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2 (unified) on the host; the guest always uses v2"
	}
	return "v1/hybrid on the host; the guest always uses v2"
}

// confinementStatus starts a program the way QEMU is started (a jail,
// Lodge's seccomp filter, an empty bounding set) and reads back what it runs with,
// so that check shows the posture this host gives, not the intended one.
func confinementStatus(cfg config.Config) (string, error) {
	var out strings.Builder
	cmd := exec.Command("/bin/cat", "/proc/self/status")
	cmd.Stdout = &out
	cmd.Env = []string{}
	user, wantUID := "as root (uid 0)", "0"
	if cfg.VMM.QEMUUIDCount > 0 {
		// As a cold boot's QEMU: a user of its own.
		pool := &uidlease.Pool{Dir: host.UIDLeaseDir, First: cfg.VMM.QEMUUIDFirst, Count: cfg.VMM.QEMUUIDCount}
		lease, err := pool.Acquire()
		if err != nil {
			return "", fmt.Errorf("no user for QEMU: %w", err)
		}
		defer lease.Release()
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(lease.ID()), Gid: uint32(lease.ID())}}
		wantUID = fmt.Sprint(lease.ID())
		user = fmt.Sprintf("as a user of its own (uids %d-%d)", cfg.VMM.QEMUUIDFirst, cfg.VMM.QEMUUIDFirst+cfg.VMM.QEMUUIDCount-1)
	}
	root, err := os.MkdirTemp("", "lodge-check-jail-")
	if err != nil {
		return "", err
	}
	defer os.Remove(root)
	wait, err := confine.StartConfined(cmd, &confine.Jail{Root: root}, nil)
	if err != nil {
		return "", fmt.Errorf("cannot start a confined process: %w", err)
	}
	if err := <-wait; err != nil {
		return "", fmt.Errorf("a confined process failed: %w", err)
	}
	st := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	if st["Seccomp"] != "2" || st["NoNewPrivs"] != "1" || strings.Trim(st["CapBnd"], "0") != "" {
		return "", fmt.Errorf("a confined process runs with Seccomp %q, NoNewPrivs %q, CapBnd %q (want 2, 1, 0): is seccomp built into this kernel?",
			st["Seccomp"], st["NoNewPrivs"], st["CapBnd"])
	}
	if f := strings.Fields(st["Uid"]); len(f) != 4 || f[0] != wantUID || f[1] != wantUID {
		return "", fmt.Errorf("a confined process runs as uid %q, want %s", st["Uid"], wantUID)
	}
	if f := strings.Fields(st["NSpid"]); len(f) < 2 || f[len(f)-1] != "1" {
		return "", fmt.Errorf("a confined process is not alone in a PID namespace (NSpid %q): does this kernel have PID namespaces?", st["NSpid"])
	}
	return "QEMU under Lodge's seccomp filter with no_new_privs, " + user +
		", without capabilities in the host's user namespace (4 for serving 9p in one of its own), core dumps or environment, in mount, PID, network and IPC namespaces with its own files and process only; " +
		"no other host process serves a guest; state directories 0700 (docs/security.md)", nil
}
