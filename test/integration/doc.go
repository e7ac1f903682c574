// Package integration runs Lodge's binaries against the real stack: QEMU
// (KVM where usable, TCG here), the guest kernel and initrd that
// `make setup` builds. `make test` sets LODGE_INTEGRATION=1 and LODGE_BIN;
// outside it the tests skip and say what is missing.
package integration
