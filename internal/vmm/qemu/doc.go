// Package qemu is the QEMU driver of vmm: a pure argv builder (Argv, golden
// tested), the qemu-system-x86_64 process and a typed QMP client.
//
// Start-up, with no socket-path races:
//
//	driver                                   qemu-system-x86_64
//	listen(qmp.sock), listen(agent.sock)
//	fork/exec with both listeners as fd 3, 4 ---> -chardev socket,fd=3,server=on
//	connect(qmp.sock)  (queued in the backlog)    accepts when the monitor is up
//	<-- greeting, qmp_capabilities -->
//	Dial: connect(agent.sock) ------------------> virtserialport "lodge.agent"
//	                                              (bytes wait until the guest opens it)
//
// The machine is -M microvm with virtio-mmio devices, non-legacy transport
// (the modern transport, which vhost devices need), guest RAM private
// (a template's file, shared, while it is built), KVM when usable and TCG otherwise. Under TCG the
// guest cannot calibrate its TSC on microvm (no HPET, no PM timer, and the
// PIT fails), so the command line carries the host's TSC frequency; the
// machine has no PIT at all (see machine in argv.go).
package qemu
