package ctrshim

import (
	"errors"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/lodgeruntime/lodge/internal/sandbox"
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

// attachNetwork wires the pod's network namespace (if the spec names one)
// and records it before the VM exists, so that a crash can be cleaned up.
func (t *taskService) attachNetwork(s *specs.Spec) (*podNetwork, error) {
	path := sandbox.NetNSPath(s)
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
