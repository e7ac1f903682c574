// Package sandbox is Lodge's core: one microVM (its QEMU, which also
// serves its files, and its agent channel) and the containers inside it, with a lifecycle that
// leaves nothing behind on failure. The OCI command line, the containerd
// shim and the lodge CLI are front ends over it.
//
// Creating a sandbox:
//
//	host preparation   state dir
//	sharefs            the shared dir: a mount namespace of its own
//	vmm start          QEMU serving the shared dir's view over virtio-9p,
//	                   virtio-serial agent port, QMP (or a clone's restore)
//	boot               kernel -> lodge-agent (PID 1) -> handshake answered
//
// Each container's root filesystem is bind-mounted below the shared dir
// (read-only when the spec says so) in the share's namespace, which QEMU
// reaches through its view, so containers can be added to a running
// sandbox.
package sandbox
