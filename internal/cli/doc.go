// Package cli is `lodge`, the standalone command for people. Today it has
// `check` (is this host ready, and with which accelerator) and `setup`
// (fetch the guest kernel, build the initrd, probe KVM).
package cli
