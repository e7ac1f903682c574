// Package sandbox is Lodge's core: one microVM (its QEMU, its virtiofsd,
// its agent channel) and the containers inside it, with a lifecycle that
// leaves nothing behind on failure. The OCI command line, the containerd
// shim and the lodge CLI are front ends over it.
//
// Creating a sandbox:
//
//	host preparation   state dir, shared dir (bind mount, shared propagation)
//	sharefs            virtiofsd --fd=3 serving the shared dir
//	vmm start          QEMU with virtio-fs, virtio-serial agent port, QMP
//	boot               kernel -> lodge-agent (PID 1) -> handshake answered
//
// Each container's root filesystem is bind-mounted below the shared dir
// (read-only when the spec says so) and reaches virtiofsd's mount namespace
// by propagation, so containers can be added to a running sandbox.
package sandbox
