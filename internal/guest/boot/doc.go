// Package boot does lodge-agent's PID 1 duties: load the kernel modules the
// initrd carries, leave the initramfs for a tmpfs root (pivot_root, which
// libcontainer needs, does not work on the initramfs), and mount the
// pseudo filesystems the agent and its containers use.
package boot
