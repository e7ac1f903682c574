package guestimage

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestResolveModules(t *testing.T) {
	t.Parallel()
	deps := map[string][]string{
		"virtio_mmio":    {"virtio", "virtio_ring"},
		"virtio_console": {"virtio", "virtio_ring"},
		"9pnet_virtio":   {"9pnet", "virtio", "virtio_ring"},
		"9pnet":          nil,
		"9p":             {"9pnet", "netfs"},
		"netfs":          nil,
		"virtio":         nil,
		"virtio_ring":    {"virtio"},
		"virtio_balloon": {"virtio", "virtio_ring"},
		"virtio_net":     {"net_failover", "virtio", "virtio_ring"},
		"net_failover":   {"failover"},
		"failover":       nil,
	}
	idx := ModuleIndex{}
	for name := range deps {
		idx[name] = name
	}
	got, err := ResolveModules(GuestModules, idx, func(p string) ([]string, error) { return deps[p], nil })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.Name)
	}
	want := []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_console", "9pnet", "9pnet_virtio", "netfs", "9p", "virtio_balloon"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("order (-want +got):\n%s", diff)
	}

	deps["virtio"] = []string{"9pnet_virtio"}
	if _, err := ResolveModules(GuestModules, idx, func(p string) ([]string, error) { return deps[p], nil }); err == nil ||
		!strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle not reported: %v", err)
	}
	delete(idx, "netfs")
	deps["virtio"] = nil
	if _, err := ResolveModules(GuestModules, idx, func(p string) ([]string, error) { return deps[p], nil }); err == nil ||
		!strings.Contains(err.Error(), "netfs not found") {
		t.Fatalf("missing module not reported: %v", err)
	}
}

func TestParseDepends(t *testing.T) {
	t.Parallel()
	info := []byte("license=GPL\x00depends=virtio,virtio-ring,\x00intree=Y\x00name=virtio_mmio\x00")
	if diff := cmp.Diff([]string{"virtio", "virtio_ring"}, parseDepends(info)); diff != "" {
		t.Fatal(diff)
	}
	if d := parseDepends([]byte("depends=\x00")); d != nil {
		t.Fatalf("empty depends parsed as %q", d)
	}
}

// TestInitrdManifest pins what goes into the initrd and where.
func TestInitrdManifest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	spec := InitrdSpec{Agent: write("agent", "AGENT-BINARY"), Init: write("init", "INIT-BINARY"), Modules: []Module{
		{Name: "virtio", Path: write("virtio.ko", "mod1")},
		{Name: "virtio_mmio", Path: write("virtio_mmio.ko", "module2")},
	}, OnDemand: [][]Module{
		{{Name: "llc", Path: write("llc.ko", "l")}, {Name: "bridge", Path: write("bridge.ko", "br"), Aliases: []string{"rtnl-link-bridge"}}},
		{{Name: "veth", Path: write("veth.ko", "v"), Aliases: []string{"rtnl-link-veth"}}},
	}}
	es, err := Manifest(spec)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range es {
		lines = append(lines, e.String())
	}
	got := strings.Join(lines, "\n") + "\n"
	golden := filepath.Join("testdata", "initrd-manifest.golden")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Fatalf("manifest (-want +got), -update to accept:\n%s", diff)
	}

	var a, b bytes.Buffer
	if err := WriteInitrd(&a, spec); err != nil {
		t.Fatal(err)
	}
	WriteInitrd(&b, spec)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("initrd is not reproducible")
	}
	if a.Len()%4 != 0 || !bytes.HasPrefix(a.Bytes(), []byte("070701")) || !bytes.Contains(a.Bytes(), []byte("TRAILER!!!")) {
		t.Fatal("not a newc archive")
	}
	if !bytes.Contains(a.Bytes(), []byte("/lodge/modules/virtio.ko\n/lodge/modules/virtio_mmio.ko\n")) {
		t.Fatal("modules.list missing or out of order")
	}
	if !bytes.Contains(a.Bytes(), []byte("rtnl-link-bridge /lodge/ondemand/llc.ko /lodge/ondemand/bridge.ko\nveth /lodge/ondemand/veth.ko\n")) {
		t.Fatal("modprobe.list missing or wrong")
	}
}

// TestInitrdUnpacks checks the archive with the system's cpio, when present.
func TestInitrdUnpacks(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, []byte("#!/bin/true\n"), 0o755)
	var buf bytes.Buffer
	if err := WriteInitrd(&buf, InitrdSpec{Agent: agent}); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("/usr/bin/cpio", "-t")
	cmd.Stdin = &buf
	cmd.Dir = out
	list, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(list), "init\n") || !strings.Contains(string(list), "dev/console") {
		t.Fatalf("cpio -t lists:\n%s", list)
	}
}

// TestExtractVmlinuxRealKernel runs on the cloud kernel that setup fetched.
func TestExtractVmlinuxRealKernel(t *testing.T) {
	kernels, _ := filepath.Glob("/var/lib/lodge/guest/kernel/*/vmlinuz")
	if len(kernels) == 0 {
		t.Skip("no fetched kernel under /var/lib/lodge/guest (run make setup)")
	}
	bz, err := os.ReadFile(kernels[0])
	if err != nil {
		t.Fatal(err)
	}
	elf, err := ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(elf, []byte("\x7fELF")) || len(elf) < len(bz) {
		t.Fatalf("extracted %d bytes, not a larger ELF", len(elf))
	}
	if _, err := ExtractVmlinux(bz[:len(bz)/2]); err != nil {
		t.Logf("truncated image: %v", err)
	}
}

func FuzzExtractVmlinux(f *testing.F) {
	f.Add(append([]byte("junk"), lz4LegacyMagic...))
	f.Fuzz(func(t *testing.T, data []byte) {
		ExtractVmlinux(data)
	})
}

// A kernel with everything built in (Lodge's own) is installed as it is,
// with its release from its banner, and its initrd carries no modules:
// the agent then loads none. Setup never asks apt for it.
func TestSetupWithBuiltKernel(t *testing.T) {
	t.Parallel()
	dir, src := t.TempDir(), t.TempDir()
	kernel := filepath.Join(src, "vmlinux")
	elf := append([]byte("\x7fELF\x02\x01\x01"), []byte("....Linux version 6.1.192-lodge (lodge@lodge) (gcc) #1 SMP\x00....")...)
	agent, init := filepath.Join(src, "agent"), filepath.Join(src, "init")
	for p, b := range map[string][]byte{kernel: elf, agent: []byte("agent"), init: []byte("init")} {
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	art, err := Setup(context.Background(), SetupArgs{Dir: dir, Package: DefaultKernelPackage, Kernel: kernel, Agent: agent, Init: init, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if art.Release != "6.1.192-lodge" || len(art.Modules) != 0 {
		t.Errorf("release %q, modules %v; want 6.1.192-lodge and none", art.Release, art.Modules)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, VmlinuxFile)); !bytes.Equal(got, elf) {
		t.Error("vmlinux is not the kernel given")
	}
	// The host's seccomp helper is the agent, executable by its user (nobody).
	helper := filepath.Join(dir, SeccompHelperFile)
	if got, _ := os.ReadFile(helper); string(got) != "agent" {
		t.Errorf("the seccomp helper holds %q, not the agent", got)
	}
	if st, err := os.Stat(helper); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("the seccomp helper: %v, %v; want mode 0755", st, err)
	}
	// The release file names its source, so that a setup without a kernel
	// file fetches the package again instead of keeping this one.
	if got, _ := os.ReadFile(filepath.Join(dir, releaseFile)); string(got) != "6.1.192-lodge\n"+builtKernel+"\n" {
		t.Errorf("kernel.release = %q", got)
	}
	initrd, err := os.ReadFile(art.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lodge/lodge-init", "init"} {
		if !bytes.Contains(initrd, []byte(name+"\x00")) {
			t.Errorf("initrd lacks %s", name)
		}
	}
	for _, name := range []string{"modules.list", "modprobe.list", ".ko"} {
		if bytes.Contains(initrd, []byte(name)) {
			t.Errorf("initrd has %s: modules for a kernel that has them built in", name)
		}
	}

	// A compressed image or a file without a banner is refused, and
	// nothing of it is installed.
	bad := t.TempDir()
	for name, b := range map[string][]byte{"bzImage": []byte("MZ\x00\x00HdrS Linux version 6.1 ("), "nobanner": []byte("\x7fELF\x02rest")} {
		p := filepath.Join(src, name)
		os.WriteFile(p, b, 0o644)
		_, err := Setup(context.Background(), SetupArgs{Dir: bad, Kernel: p, Agent: agent, Init: init, Log: log})
		if err == nil {
			t.Errorf("%s accepted as a kernel", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(bad, VmlinuxFile)); err == nil {
			t.Errorf("%s: a vmlinux was installed", name)
		}
	}
}
