package guestimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultKernelPackage is Debian's metapackage for its generic kernel: the
// cloud kernel lacks 9p, which template clones need for live host
// directories (docs/architecture.md, "Templates and clones").
const DefaultKernelPackage = "linux-image-amd64"

// Files in the guest artifacts directory.
const (
	VmlinuxFile = "vmlinux"    // PVH-bootable ELF kernel
	InitrdFile  = "initrd.img" // newc cpio
	// SeccompHelperFile is a copy of the initrd's agent that the host runs,
	// natively, to compile containers' seccomp profiles (its seccomp-spec
	// mode; internal/sandbox/seccomp.go).
	SeccompHelperFile = "lodge-agent"
	releaseFile       = "kernel.release"
	kernelDir         = "kernel"
)

// Artifacts are the boot files Setup produced.
type Artifacts struct {
	Kernel  string
	Initrd  string
	Release string
	Modules []Module
}

// SetupArgs configures Setup.
type SetupArgs struct {
	Dir     string // artifacts directory Lodge owns
	Package string // Debian kernel package (a metapackage is resolved)
	// Kernel, if set, is a PVH vmlinux with everything built in (Lodge's
	// own: scripts/build-kernel.sh) to use instead of Package's: it is
	// copied into Dir, and the initrd carries no modules.
	Kernel string
	Agent  string // static lodge-agent to put in the initrd
	Init   string // static lodge-init to put in the initrd
	Log    *slog.Logger
}

// Setup makes sure the kernel is unpacked in Dir (downloading it with
// apt-get only when missing) and rebuilds the initrd from Agent.
func Setup(ctx context.Context, a SetupArgs) (Artifacts, error) {
	if err := os.MkdirAll(a.Dir, 0o755); err != nil {
		return Artifacts{}, err
	}
	var (
		rel      string
		mods     []Module
		onDemand [][]Module
		err      error
	)
	if a.Kernel != "" { // everything built in: no modules
		rel, err = installKernel(a.Dir, a.Kernel)
	} else {
		rel, mods, onDemand, err = packageKernel(ctx, a)
	}
	if err != nil {
		return Artifacts{}, err
	}
	initrd := filepath.Join(a.Dir, InitrdFile)
	if err := writeFileAtomic(initrd, func(f *os.File) error {
		w := bufio.NewWriterSize(f, 1<<20)
		if err := WriteInitrd(w, InitrdSpec{Agent: a.Agent, Init: a.Init, Modules: mods, OnDemand: onDemand}); err != nil {
			return err
		}
		return w.Flush()
	}); err != nil {
		return Artifacts{}, fmt.Errorf("write initrd: %w", err)
	}
	if err := installHelper(filepath.Join(a.Dir, SeccompHelperFile), a.Agent); err != nil {
		return Artifacts{}, fmt.Errorf("seccomp helper: %w", err)
	}
	return Artifacts{Kernel: filepath.Join(a.Dir, VmlinuxFile), Initrd: initrd, Release: rel, Modules: mods}, nil
}

// installHelper copies the agent binary to path, executable by anyone
// (the host runs it as an unprivileged user), as a new file.
func installHelper(path, agent string) error {
	src, err := os.Open(agent)
	if err != nil {
		return err
	}
	defer src.Close()
	return writeFileAtomic(path, func(f *os.File) error {
		if _, err := io.Copy(f, src); err != nil {
			return err
		}
		return f.Chmod(0o755)
	})
}

// packageKernel fetches Package's kernel (once) and picks the modules
// the initrd carries: those every boot loads, and the on-demand ones.
func packageKernel(ctx context.Context, a SetupArgs) (string, []Module, [][]Module, error) {
	rel, err := ensureKernel(ctx, a)
	if err != nil {
		return "", nil, nil, err
	}
	idx, err := IndexModules(filepath.Join(a.Dir, kernelDir, rel, "modules"))
	if err != nil {
		return "", nil, nil, fmt.Errorf("index modules: %w", err)
	}
	mods, err := ResolveModules(GuestModules, idx, ModuleDepends)
	if err != nil {
		return "", nil, nil, err
	}
	onDemand, err := resolveOnDemand(mods, idx)
	if err != nil {
		return "", nil, nil, err
	}
	return rel, mods, onDemand, nil
}

// resolveOnDemand gives each on-demand module the chain of modules to load
// for it, leaving out those loaded at boot.
func resolveOnDemand(boot []Module, idx ModuleIndex) ([][]Module, error) {
	loaded := map[string]bool{}
	for _, m := range boot {
		loaded[m.Name] = true
	}
	var out [][]Module
	for _, name := range OnDemandModules {
		chain, err := ResolveModules([]string{name}, idx, ModuleDepends)
		if err != nil {
			return nil, err
		}
		var need []Module
		for _, m := range chain {
			if !loaded[m.Name] {
				need = append(need, m)
			}
		}
		last := &need[len(need)-1]
		if last.Aliases, err = ModuleAliases(last.Path); err != nil {
			return nil, err
		}
		out = append(out, need)
	}
	return out, nil
}

var safeName = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`)

// ensureKernel returns the unpacked kernel's release, fetching it first if
// the directory has none.
func ensureKernel(ctx context.Context, a SetupArgs) (string, error) {
	// The release file holds the release and the package it came from: a
	// change of guest.kernel_package fetches the new one.
	if b, err := os.ReadFile(filepath.Join(a.Dir, releaseFile)); err == nil {
		f := strings.Fields(string(b))
		if _, err := os.Stat(filepath.Join(a.Dir, VmlinuxFile)); err == nil && len(f) == 2 &&
			safeName.MatchString(f[0]) && f[1] == a.Package {
			return f[0], nil
		}
	}
	pkg, err := resolvePackage(ctx, a.Package)
	if err != nil {
		return "", err
	}
	a.Log.Info("fetching guest kernel", "package", pkg)
	tmp, err := os.MkdirTemp(a.Dir, ".fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := run(ctx, tmp, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg); err != nil {
		return "", fmt.Errorf("download %s: %w", pkg, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("download %s: expected one .deb, found %d", pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if err := run(ctx, tmp, "dpkg-deb", "-x", debs[0], root); err != nil {
		return "", err
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return "", fmt.Errorf("%s holds %d kernels, want 1", pkg, len(vmlinuz))
	}
	rel := strings.TrimPrefix(filepath.Base(vmlinuz[0]), "vmlinuz-")
	if !safeName.MatchString(rel) {
		return "", fmt.Errorf("unexpected kernel release %q", rel)
	}
	bz, err := os.ReadFile(vmlinuz[0])
	if err != nil {
		return "", err
	}
	elf, err := ExtractVmlinux(bz)
	if err != nil {
		return "", err
	}
	dest := filepath.Join(a.Dir, kernelDir, rel)
	os.RemoveAll(dest)
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(root, "lib", "modules", rel), filepath.Join(dest, "modules")); err != nil {
		return "", err
	}
	if err := os.Rename(vmlinuz[0], filepath.Join(dest, "vmlinuz")); err != nil {
		return "", err
	}
	if err := installVmlinux(a.Dir, elf, rel, a.Package); err != nil {
		return "", err
	}
	return rel, nil
}

// installVmlinux puts a kernel into dir as its vmlinux and records its
// release and source. The record goes first and comes back last: should
// the copy fail half-way, no setup takes that vmlinux for the one a
// record names.
func installVmlinux(dir string, elf []byte, rel, source string) error {
	if err := os.Remove(filepath.Join(dir, releaseFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, VmlinuxFile), func(f *os.File) error {
		_, err := f.Write(elf)
		return err
	}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, releaseFile), []byte(rel+"\n"+source+"\n"), 0o644)
}

// builtKernel is the source the release file names for a kernel given to
// Setup as a file: a later setup without one fetches the package again.
const builtKernel = "make-kernel"

// installKernel copies a kernel with everything built in into dir as its
// vmlinux and returns its release, read from the kernel's banner.
func installKernel(dir, kernel string) (string, error) {
	elf, err := os.ReadFile(kernel)
	if err != nil {
		return "", fmt.Errorf("kernel: %w (build Lodge's with `make kernel`)", err)
	}
	rel, err := kernelRelease(elf)
	if err != nil {
		return "", fmt.Errorf("kernel %s: %w", kernel, err)
	}
	return rel, installVmlinux(dir, elf, rel, builtKernel)
}

var banner = regexp.MustCompile(`Linux version ([a-z0-9][a-z0-9.+-]*) \(`)

// kernelRelease finds the release in an uncompressed kernel's version
// banner ("Linux version 6.1.192-lodge (...").
func kernelRelease(elf []byte) (string, error) {
	if !bytes.HasPrefix(elf, []byte("\x7fELF")) {
		return "", errors.New("not an ELF file: give the vmlinux, not a compressed image")
	}
	m := banner.FindSubmatch(elf)
	if m == nil {
		return "", errors.New("no Linux version banner in it")
	}
	return string(m[1]), nil
}

var dependsLine = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[a-z0-9.+-]+)\s*$`)

// resolvePackage turns a metapackage into the kernel image package it
// depends on (apt-cache reads local lists only).
func resolvePackage(ctx context.Context, pkg string) (string, error) {
	if !safeName.MatchString(pkg) {
		return "", fmt.Errorf("invalid package name %q", pkg)
	}
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w (is apt's package list current? run apt-get update)", pkg, err)
	}
	if m := dependsLine.FindSubmatch(out); m != nil && bytes.Contains(m[1], []byte("-")) {
		return string(m[1]), nil
	}
	return pkg, nil
}

func run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			return fmt.Errorf("%s not found: install it (Debian package apt/dpkg)", name)
		}
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

func writeFileAtomic(path string, fill func(*os.File) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := fill(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
