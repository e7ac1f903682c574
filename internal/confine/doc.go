// Package confine starts the host helper that touches host files for a
// guest (QEMU, which serves every sandbox's share over 9p) on threads of
// their own under a seccomp filter, so that nothing a guest writes through
// them carries privilege on the host (setuid/setgid bits, device nodes,
// file capabilities). See docs/security.md.
package confine
