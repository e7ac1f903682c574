package sandbox

import (
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func podSpec(ns ...specs.LinuxNamespace) *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}},
		Linux: &specs.Linux{Namespaces: ns, CgroupsPath: "/kubepods/pod1/c1",
			Sysctl: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}},
	}
}

func TestGuestSpecPodPlacement(t *testing.T) {
	t.Parallel()
	hostNet := specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"}
	sandboxNS := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, hostNet}
	workloadNS := []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "/proc/4242/ns/pid"},
		{Type: specs.IPCNamespace, Path: "/proc/4242/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/4242/ns/uts"},
		{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/proc/4242/ns/net"}}

	// The sandbox container: the pod's network is the VM's own.
	in := podSpec(sandboxNS...)
	gs, err := guestSpec(in, true, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sandboxNS[:4], gs.Linux.Namespaces); diff != "" {
		t.Errorf("sandbox namespaces (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"kernel.shm_rmid_forced": "1"}, gs.Linux.Sysctl); diff != "" {
		t.Errorf("net.* sysctls must be left to the VM (-want +got):\n%s", diff)
	}
	if len(in.Linux.Namespaces) != 5 || len(in.Linux.Sysctl) != 2 {
		t.Error("the caller's spec was modified")
	}
	if h, _ := os.Hostname(); gs.Hostname != h {
		t.Errorf("hostname of a new UTS namespace: %q, want the host's %q", gs.Hostname, h)
	}

	// A workload container joins the sandbox container's guest namespaces.
	gs, err = guestSpec(podSpec(workloadNS...), true, 77, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "/proc/77/ns/pid"},
		{Type: specs.IPCNamespace, Path: "/proc/77/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/77/ns/uts"},
		{Type: specs.MountNamespace}}
	if diff := cmp.Diff(want, gs.Linux.Namespaces); diff != "" {
		t.Errorf("workload namespaces (-want +got):\n%s", diff)
	}
	if gs.Hostname != "" {
		t.Errorf("a joined UTS namespace got hostname %q", gs.Hostname)
	}

	// Outside a pod, a network namespace an engine made is the VM's (the
	// host side wires its interfaces); any other host namespace path is
	// an error a user can act on.
	gs, err = guestSpec(podSpec(hostNet, specs.LinuxNamespace{Type: specs.PIDNamespace}), false, 0, false)
	if err != nil {
		t.Fatalf("engine netns outside a pod: %v", err)
	}
	if diff := cmp.Diff([]specs.LinuxNamespace{{Type: specs.PIDNamespace}}, gs.Linux.Namespaces); diff != "" {
		t.Errorf("lone container namespaces (-want +got):\n%s", diff)
	}
	hostIPC := specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"}
	if _, err := guestSpec(podSpec(hostIPC), false, 0, false); !errors.Is(err, ErrUnsupported) {
		t.Errorf("host ipc namespace outside a pod: %v", err)
	}
}

func TestPodSysctls(t *testing.T) {
	t.Parallel()
	got := PodSysctls(podSpec())
	if diff := cmp.Diff(map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Host LSM policies do not travel into the guest, whose kernel has none;
// the caller's spec is left as it was.
func TestGuestSpecDropsHostLSMLabels(t *testing.T) {
	t.Parallel()
	in := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}, ApparmorProfile: "docker-default",
		SelinuxLabel: "system_u:system_r:container_t:s0"}, Linux: &specs.Linux{MountLabel: "system_u:object_r:container_file_t:s0"}}
	gs, err := guestSpec(in, false, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if gs.Process.ApparmorProfile != "" || gs.Process.SelinuxLabel != "" || gs.Linux.MountLabel != "" {
		t.Errorf("guest spec keeps host labels: %+v %q", gs.Process, gs.Linux.MountLabel)
	}
	if in.Process.ApparmorProfile != "docker-default" || in.Linux.MountLabel == "" {
		t.Error("the caller's spec was changed")
	}
}

func TestCheckNetNSRefusesTheHosts(t *testing.T) {
	if err := CheckNetNS("/proc/self/ns/net"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("this process's netns: %v", err)
	}
	if err := CheckNetNS("/nonexistent/netns"); err == nil {
		t.Error("a missing netns was accepted")
	}
	s := podSpec(specs.LinuxNamespace{Type: specs.NetworkNamespace}, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/x"})
	if p := NetNSPath(s); p != "/run/netns/x" {
		t.Errorf("NetNSPath = %q", p)
	}
}

// A late network (Docker's hook model): the lone container's new network
// namespace is the VM's own, whose net.* sysctls the guest sets; without
// it the container gets a namespace of its own in the guest.
func TestGuestSpecLateNetwork(t *testing.T) {
	t.Parallel()
	in := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Linux: &specs.Linux{
		Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}, {Type: specs.PIDNamespace}},
		Sysctl:     map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel.msgmax": "9000"}}}
	for _, vmNet := range []bool{false, true} {
		gs, err := guestSpec(in, false, 0, vmNet)
		if err != nil {
			t.Fatal(err)
		}
		hasNet := false
		for _, ns := range gs.Linux.Namespaces {
			hasNet = hasNet || ns.Type == specs.NetworkNamespace
		}
		_, netSysctl := gs.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"]
		if hasNet == vmNet || netSysctl == vmNet || gs.Linux.Sysctl["kernel.msgmax"] != "9000" || len(gs.Linux.Namespaces) < 1 {
			t.Errorf("vmNet %v: namespaces %v sysctls %v", vmNet, gs.Linux.Namespaces, gs.Linux.Sysctl)
		}
	}
}
