package sandbox

import (
	"fmt"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"golang.org/x/sys/unix"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// NICs are a wired namespace's interfaces as the VM's NICs (tap, MAC).
func NICs(a *netsetup.Attachment) []vmm.NIC {
	var out []vmm.NIC
	for i, l := range a.Links {
		out = append(out, vmm.NIC{Tap: l.File, MAC: a.Interfaces[i].MAC})
	}
	return out
}

// GuestNetwork is what the agent configures in the guest for a wired
// namespace: its interfaces' addresses and its routes.
func GuestNetwork(a *netsetup.Attachment) *agentv1.NetworkRequest {
	req := &agentv1.NetworkRequest{}
	for _, in := range a.Interfaces {
		req.Interfaces = append(req.Interfaces, &agentv1.NetworkInterface{Mac: in.MAC, Name: in.Name,
			Mtu: uint32(in.MTU), Addresses: in.Addrs})
	}
	for _, r := range a.Routes {
		req.Routes = append(req.Routes, &agentv1.NetworkRoute{Destination: r.Dest, Gateway: r.Gateway, Device: r.Device})
	}
	return req
}

// NetNSPath is the network namespace a spec joins, if any (CRI's pod
// namespace, or one an engine such as Podman or lodge made): where the
// interfaces the VM takes over are.
func NetNSPath(s *specs.Spec) string {
	if s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace && ns.Path != "" {
			return ns.Path
		}
	}
	return ""
}

// CheckNetNS refuses a network namespace that is the host's own (that of
// PID 1 or of this process): wiring it would hand the host's interfaces
// to a VM.
func CheckNetNS(path string) error {
	// A process's namespace on the host (PID 1's, another container's
	// runtime's) is never one an engine made for this container.
	if strings.HasPrefix(filepath.Clean(path), "/proc/") {
		return fmt.Errorf("%w: the network namespace %s is a host process's: a container in a VM cannot share the host's namespaces (give it a namespace of its own)", ErrUnsupported, path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("network namespace %s: %w", path, err)
	}
	for _, own := range []string{"/proc/1/ns/net", "/proc/self/ns/net"} {
		var o unix.Stat_t
		if unix.Stat(own, &o) == nil && o.Dev == st.Dev && o.Ino == st.Ino {
			return fmt.Errorf("%w: the network namespace %s is the host's: a container in a VM cannot share the host's namespaces (give it a namespace of its own)", ErrUnsupported, path)
		}
	}
	return nil
}
