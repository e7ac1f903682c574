package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// guestMountTypes are filesystems the guest kernel provides itself.
var guestMountTypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devpts": true, "mqueue": true,
	"cgroup": true, "cgroup2": true,
}

// guestSpec returns the spec as the agent should see it, or an error for
// what cannot apply inside a VM. The caller's spec is not modified. In a
// pod (see Placement) a network namespace path means the VM's network,
// and other namespace paths mean those of the guest process joinPID (none
// for the sandbox container, which makes its own).
//
// vmNet makes a new network namespace the VM's own too (see
// Config.LateNetwork).
func guestSpec(in *specs.Spec, inPod bool, joinPID int, vmNet bool) (*specs.Spec, error) {
	if in == nil || in.Process == nil || len(in.Process.Args) == 0 {
		return nil, fmt.Errorf("spec has no process args")
	}
	s := *in
	s.Hooks = nil // run on the host by the front end
	s.Process = guestProcess(in.Process)
	if s.Hostname == "" && newUTS(in) {
		// A new UTS namespace starts with the host's name under runc; in
		// the guest it would start with the guest's.
		s.Hostname, _ = os.Hostname()
	}
	if s.Linux != nil {
		l := *s.Linux
		l.Namespaces = nil
		for _, ns := range in.Linux.Namespaces {
			switch {
			case ns.Type == specs.NetworkNamespace && ns.Path == "" && vmNet:
				continue // the VM's own, wired after the engine's hooks
			case ns.Path == "":
			case ns.Type == specs.NetworkNamespace:
				// The VM's own: the host side wires the named namespace's
				// interfaces to the VM's NICs (pods, and lone containers
				// whose engine made a namespace: Podman, lodge).
				continue
			case inPod && joinPID > 0:
				ns.Path = fmt.Sprintf("/proc/%d/ns/%s", joinPID, nsFile[ns.Type])
			case inPod:
				ns.Path = "" // the sandbox container makes the pod's
			default:
				return nil, fmt.Errorf("%w: joining the host's %s namespace %s (a container in a VM cannot share the host's namespaces)",
					ErrUnsupported, ns.Type, ns.Path)
			}
			l.Namespaces = append(l.Namespaces, ns)
		}
		l.CgroupsPath = "" // the guest chooses its own cgroup layout
		l.MountLabel = ""  // an SELinux label of the host's policy (see guestProcess)
		if (inPod || vmNet) && len(l.Sysctl) > 0 {
			// The pod's (or a late network's) namespace is the guest's
			// own: its net.* sysctls are set once for the VM (PodSysctls),
			// not by the container runtime, which refuses them outside a
			// new netns.
			_, l.Sysctl = splitSysctls(in.Linux.Sysctl)
		}
		s.Linux = &l
	}
	s.Mounts = append([]specs.Mount(nil), s.Mounts...)
	for i, m := range s.Mounts {
		if isBind(m) {
			if !filepath.IsAbs(m.Source) {
				return nil, fmt.Errorf("bind mount source %q for %s must be an absolute host path", m.Source, m.Destination)
			}
			// A bind mount takes no filesystem data; drop such options as
			// runc 1.1 did, rather than fail in the guest.
			var opts []string
			for _, o := range m.Options {
				if bindOptions[o] {
					opts = append(opts, o)
				}
			}
			s.Mounts[i].Options = opts
			continue
		}
		if !guestMountTypes[m.Type] {
			return nil, fmt.Errorf("%w: mount of %q on %s (type %q): only bind mounts of host paths and the guest's own filesystems (%s) can be used",
				ErrUnsupported, m.Source, m.Destination, m.Type, "proc, sysfs, tmpfs, devpts, mqueue, cgroup")
		}
	}
	return &s, nil
}

// newUTS reports a spec that makes its own UTS namespace.
func newUTS(s *specs.Spec) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UTSNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// nsFile names a namespace type's file in /proc/PID/ns.
var nsFile = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt",
	specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts", specs.UserNamespace: "user",
	specs.CgroupNamespace: "cgroup", specs.TimeNamespace: "time",
}

// bindOptions are the mount options that are flags (and so apply to a bind
// mount).
var bindOptions = func() map[string]bool {
	m := map[string]bool{}
	for _, o := range strings.Fields(`ro rw bind rbind nosuid suid nodev dev noexec exec sync async dirsync
		remount mand nomand atime noatime diratime nodiratime relatime norelatime strictatime nostrictatime
		private rprivate shared rshared slave rslave unbindable runbindable rro rrw rnosuid rsuid rnodev rdev
		rnoexec rexec rnoatime ratime rnodiratime rdiratime rrelatime rnorelatime rstrictatime rnostrictatime
		idmap ridmap tmpcopyup nosymfollow rnosymfollow`) {
		m[o] = true
	}
	return m
}()

// isBind reports a bind mount (of a host path).
func isBind(m specs.Mount) bool {
	return m.Type == "bind" || hasOption(m.Options, "bind") || hasOption(m.Options, "rbind")
}

func hasOption(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// PodSysctls are the net.* sysctls of a pod's spec: the guest applies them
// to its network namespace, which is the pod's.
func PodSysctls(s *specs.Spec) map[string]string {
	if s.Linux == nil {
		return map[string]string{}
	}
	net, _ := splitSysctls(s.Linux.Sysctl)
	return net
}

// splitSysctls separates the network namespace's sysctls (net.*) from the
// others.
func splitSysctls(all map[string]string) (net, other map[string]string) {
	net, other = map[string]string{}, map[string]string{}
	for k, v := range all {
		if strings.HasPrefix(k, "net.") {
			net[k] = v
		} else {
			other[k] = v
		}
	}
	return net, other
}

// guestProcess is p for the guest kernel: the AppArmor profile and SELinux
// label name policies loaded in the host's kernel (Docker sets
// "docker-default" wherever the host has AppArmor); the guest kernel has no
// LSM policy, and the process is confined from the host by the VM.
func guestProcess(p *specs.Process) *specs.Process {
	if p == nil || (p.ApparmorProfile == "" && p.SelinuxLabel == "") {
		return p
	}
	g := *p
	g.ApparmorProfile, g.SelinuxLabel = "", ""
	return &g
}
