// Package agentv1 is version 1 of the host <-> guest agent API: the protobuf
// messages and ttrpc services in agent.proto and the code generated from it.
//
// Regenerate with `make generate` after editing agent.proto.
package agentv1

// APIVersion is the major API version both sides of this package speak:
// a host refuses an agent of another major. What the API gains within a
// major (a call, a field) an agent announces as a capability, and the host
// asks for it only where the agent has it.
const APIVersion = 1

// Capabilities an agent announces in VersionResponse.capabilities.
const (
	// CapCgroup2: containers' limits are enforced with cgroup v2.
	CapCgroup2 = "cgroup2"
	// CapSeccomp: the agent enforces a spec's linux.seccomp. An agent
	// built without it gets no container that asks for a filter.
	CapSeccomp = "seccomp"
	// CapIdentify: the agent answers Health.Identify (a template's clones
	// need it before they may run anything).
	CapIdentify = "identify"
	// CapLayers: the agent builds a root from erofs layer images and a
	// writable ext4 image (Rootfs.layers, Rootfs.writable).
	CapLayers = "layers"
	// CapPodHolder: the agent makes a pod's sandbox container (CreateRequest.
	// pod_sandbox) as a pod holder, a process in the pod's new namespaces
	// running the pause program, rather than as a full container.
	CapPodHolder = "pod-holder"
	// CapChanges: the agent answers a changes stream (transport.KindChanges)
	// with the container's writable layer as an OCI layer tar.
	CapChanges = "changes"
	// CapPortIn: the agent forwards a port stream that names a container
	// (transport.PortHeader) into that container's network namespace, and
	// answers a status line first.
	CapPortIn = "port-in"
	// CapWatch: the agent answers a watch stream (transport.KindWatch)
	// with the changes below a directory of a container.
	CapWatch = "watch"
	// CapReclaim: the agent answers Containers.Reclaim.
	CapReclaim = "reclaim"
)
