package ctrshim

import (
	"errors"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

// podNetwork is the pod's network namespace wired to its VM.
type podNetwork struct {
	*netsetup.Attachment
	fwd *netsetup.PortForwarder // localhost in the pod's namespace -> guest
}

// netRecord lets `shim delete` undo the wiring after a crash.
type netRecord struct {
	NetNS string   `json:"netns"`
	Veths []string `json:"veths"`
	Taps  []string `json:"taps"`
	// ForwardPort is the port-forwarding listener's port (its nat rule).
	ForwardPort int `json:"forward_port,omitempty"`
}

func (r *netRecord) teardown() error {
	var errs []error
	if r.ForwardPort != 0 {
		errs = append(errs, netsetup.RemoveRedirect(r.NetNS, r.ForwardPort))
	}
	return errors.Join(append(errs, netsetup.Teardown(r.NetNS, r.Veths, r.Taps))...)
}

// netnsPath is the network namespace the spec joins, if any: CRI's pod
// namespace, where CNI has put the pod's interfaces.
func netnsPath(s *specs.Spec) string {
	if s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// attachNetwork wires the pod's network namespace (if the spec names one)
// and records it before the VM exists, so that a crash can be cleaned up.
func (t *taskService) attachNetwork(s *specs.Spec) (*podNetwork, error) {
	path := netnsPath(s)
	if path == "" {
		return nil, nil
	}
	a, err := netsetup.Attach(path)
	if err != nil {
		return nil, err
	}
	pn := &podNetwork{Attachment: a}
	rec := &netRecord{NetNS: path}
	for _, l := range a.Links {
		rec.Veths, rec.Taps = append(rec.Veths, l.Veth), append(rec.Taps, l.Tap)
	}
	t.mu.Lock()
	t.net = pn
	t.mu.Unlock()
	if err := t.updateRecord(func(r *podRecord) { r.Network = rec }); err != nil {
		t.detachNetwork()
		return nil, err
	}
	return pn, nil
}

// updateRecord changes the pod's record and saves it.
func (t *taskService) updateRecord(change func(*podRecord)) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	change(t.rec)
	return t.rec.save(t.dir)
}

// forwardPorts makes localhost in the pod's namespace on the host reach
// the guest, which is what CRI's port forwarding dials.
func (t *taskService) forwardPorts(pn *podNetwork, sb *sandbox.Sandbox) error {
	fwd, err := netsetup.ForwardLocalhost(pn.NetNS, sb.DialPort, t.log)
	if err != nil {
		return err
	}
	pn.fwd = fwd
	return t.updateRecord(func(r *podRecord) { r.Network.ForwardPort = fwd.Port })
}

// detachNetwork removes the taps and redirects, if there are any.
func (t *taskService) detachNetwork() error {
	t.mu.Lock()
	pn := t.net
	t.net = nil
	t.mu.Unlock()
	if pn == nil {
		return nil
	}
	var errs []error
	if pn.fwd != nil {
		errs = append(errs, pn.fwd.Close())
	}
	return errors.Join(append(errs, pn.Detach())...)
}

// nics are the VM's NICs: one per pod interface, with its MAC.
func (p *podNetwork) nics() []vmm.NIC {
	var out []vmm.NIC
	for i, l := range p.Links {
		out = append(out, vmm.NIC{Tap: l.File, MAC: p.Interfaces[i].MAC})
	}
	return out
}

// guestConfig is what the agent configures in the guest.
func (p *podNetwork) guestConfig() *agentv1.NetworkRequest {
	req := &agentv1.NetworkRequest{}
	for _, in := range p.Interfaces {
		req.Interfaces = append(req.Interfaces, &agentv1.NetworkInterface{Mac: in.MAC, Name: in.Name,
			Mtu: uint32(in.MTU), Addresses: in.Addrs})
	}
	for _, r := range p.Routes {
		req.Routes = append(req.Routes, &agentv1.NetworkRoute{Destination: r.Dest, Gateway: r.Gateway, Device: r.Device})
	}
	return req
}
