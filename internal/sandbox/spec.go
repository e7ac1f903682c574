package sandbox

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// guestMountTypes are filesystems the guest kernel provides itself.
var guestMountTypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devpts": true, "mqueue": true,
	"cgroup": true, "cgroup2": true,
}

// guestSpec returns the spec as the agent should see it, or an error for
// what cannot apply inside a VM. The caller's spec is not modified.
func guestSpec(in *specs.Spec) (*specs.Spec, error) {
	if in == nil || in.Process == nil || len(in.Process.Args) == 0 {
		return nil, fmt.Errorf("spec has no process args")
	}
	s := *in
	s.Hooks = nil // run on the host by the front end
	if s.Linux != nil {
		l := *s.Linux
		for _, ns := range l.Namespaces {
			if ns.Path != "" {
				return nil, fmt.Errorf("%w: joining the host's %s namespace %s (a container in a VM cannot share the host's namespaces)",
					ErrUnsupported, ns.Type, ns.Path)
			}
		}
		l.CgroupsPath = "" // the guest chooses its own cgroup layout
		s.Linux = &l
	}
	for _, m := range s.Mounts {
		if !guestMountTypes[m.Type] {
			return nil, fmt.Errorf("%w: mount of %q on %s (type %q): host bind mounts are not shared with the guest yet",
				ErrUnsupported, m.Source, m.Destination, m.Type)
		}
	}
	return &s, nil
}
