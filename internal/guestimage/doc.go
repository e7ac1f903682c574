// Package guestimage produces the guest's boot artifacts: the kernel (from
// Debian's generic linux-image-amd64, unpacked into a directory Lodge owns and
// turned into a PVH-bootable vmlinux) and the initrd (lodge-agent as /init
// plus exactly the kernel modules it needs, in dependency order read from
// the modules themselves), written in pure Go.
package guestimage
