package guestimage

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// GuestModules are the modules every boot loads on Debian's generic
// kernel: the virtio-mmio transport, the virtio-serial port of the agent
// channel, 9p and its virtio transport for the sandbox's share (QEMU serves
// it, cold boots and clones alike) and the balloon through which the guest
// reports the memory it frees. Their dependencies are added from the
// modules' own metadata.
var GuestModules = []string{"virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "virtio_balloon"}

// OnDemandModules go into the initrd but are loaded only when needed:
// virtio_net by the agent when the host gives the VM NICs (a pod with a
// network), bridge and veth when the guest kernel asks (request_module: a
// pod creating a bridge or a veth pair), the agent answering as modprobe;
// loop, erofs, overlay and ext4 (after crc32c_generic, which libcrc32c and
// ext4 ask the crypto API for by name) for roots built from layer images
// (by the agent at its first such root, or by a template's boot); tun and
// fuse when a (privileged) container opens /dev/net/tun or /dev/fuse.
var OnDemandModules = []string{"virtio_net", "bridge", "veth", "crc32c_generic", "loop", "erofs", "overlay", "ext4", "tun", "fuse"}

// Module is one kernel module file.
type Module struct {
	Name string
	Path string
	// Aliases are the names the kernel may request it by (on-demand
	// modules only), e.g. rtnl-link-bridge.
	Aliases []string
}

// ModuleIndex maps module names to files under a modules tree.
type ModuleIndex map[string]string

// IndexModules walks a /lib/modules/<release> tree.
func IndexModules(dir string) (ModuleIndex, error) {
	idx := ModuleIndex{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			idx[moduleName(p)] = p
		}
		return nil
	})
	return idx, err
}

func moduleName(path string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
}

// ModuleDepends reads the "depends=" entry of a module's .modinfo section.
func ModuleDepends(path string) ([]string, error) {
	data, err := modinfo(path)
	if err != nil {
		return nil, err
	}
	return parseDepends(data), nil
}

// modinfo returns a module's .modinfo section: NUL-separated key=value
// strings.
func modinfo(path string) ([]byte, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", path)
	}
	return s.Data()
}

// ModuleAliases reads the "alias=" entries of a module's .modinfo section
// that are plain names (not device match patterns).
func ModuleAliases(path string) ([]string, error) {
	data, err := modinfo(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("alias=")); ok && !bytes.ContainsAny(v, "*?[:") {
			out = append(out, string(v))
		}
	}
	return out, nil
}

// parseDepends extracts the dependency list from .modinfo contents
// (NUL-separated key=value strings).
func parseDepends(modinfo []byte) []string {
	for _, kv := range bytes.Split(modinfo, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps
		}
	}
	return nil
}

// ResolveModules returns want plus their dependencies, each after the
// modules it depends on. deps reports a module's direct dependencies.
func ResolveModules(want []string, idx ModuleIndex, deps func(path string) ([]string, error)) ([]Module, error) {
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from []string) error
	visit = func(name string, from []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(from, " -> "), name)
		}
		path, ok := idx[name]
		if !ok {
			return fmt.Errorf("module %s not found in the kernel's modules (needed by %s)", name, strings.Join(from, " -> "))
		}
		state[name] = 1
		ds, err := deps(path)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(from, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: path})
		return nil
	}
	for _, w := range want {
		if err := visit(w, []string{"lodge"}); err != nil {
			return nil, err
		}
	}
	return order, nil
}
