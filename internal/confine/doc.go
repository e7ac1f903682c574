// Package confine starts the host helpers that touch host files for a
// guest (virtiofsd; QEMU, which serves 9p to template clones) on threads of
// their own under a seccomp filter, so that nothing a guest writes through
// them carries privilege on the host (setuid/setgid bits, device nodes,
// file capabilities). See docs/security.md.
package confine
