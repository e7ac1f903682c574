package confine

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Thread installs, on the calling thread only (it is inherited by the
// processes the thread starts), a seccomp filter that keeps what a guest
// writes through a host helper (QEMU serving 9p) from
// carrying privilege on the host:
//
//   - creating or chmod-ing a file with the setuid or setgid bit fails with
//     EPERM (open, openat, creat, mknod, mknodat, chmod, fchmod, fchmodat,
//     fchmodat2: their mode is a plain argument, so the filter can read it);
//   - creating a character or block device node fails with EPERM (QEMU
//     also runs without CAP_MKNOD);
//   - extended attributes cannot be set (no file capabilities), openat2 and io_uring are refused
//     (ENOSYS) because the filter cannot read their arguments;
//   - any other architecture or the x32 ABI gets EPERM.
//
// A setgid directory made by the host stays as it is; the guest cannot
// chmod g+s itself.
func Thread() error {
	prog := seccompProgram()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fp))); e != 0 {
		return fmt.Errorf("seccomp filter: %w", e)
	}
	return nil
}

// x86_64 syscall numbers the filter needs beyond x/sys/unix's.
const (
	sysFchmodat2   = 452
	sysSetxattrat  = 463
	x32SyscallBit  = 0x40000000
	modePrivBits   = unix.S_ISUID | unix.S_ISGID
	seccompRetErrn = unix.SECCOMP_RET_ERRNO
)

// modeRule checks argument arg (a mode_t) of syscall nr; dev also refuses
// device node types.
type modeRule struct {
	nr  uint32
	arg int
	dev bool
}

var modeRules = []modeRule{
	{unix.SYS_OPEN, 2, false}, {unix.SYS_OPENAT, 3, false}, {unix.SYS_CREAT, 1, false},
	{unix.SYS_MKNOD, 1, true}, {unix.SYS_MKNODAT, 2, true},
	{unix.SYS_CHMOD, 1, false}, {unix.SYS_FCHMOD, 1, false}, {unix.SYS_FCHMODAT, 2, false}, {sysFchmodat2, 2, false},
}

// denied syscalls and the errno they get.
var denied = []struct {
	nr    uint32
	errno unix.Errno
}{
	{unix.SYS_SETXATTR, unix.EPERM}, {unix.SYS_LSETXATTR, unix.EPERM}, {unix.SYS_FSETXATTR, unix.EPERM},
	{sysSetxattrat, unix.EPERM}, {unix.SYS_OPENAT2, unix.ENOSYS}, {unix.SYS_IO_URING_SETUP, unix.ENOSYS},
}

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

const (
	ldAbs  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	jeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	jge    = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	jset   = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	andK   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	ret    = unix.BPF_RET | unix.BPF_K
	offNr  = 0
	offArc = 4
)

// argLow is the offset of the low 32 bits of syscall argument i in
// struct seccomp_data (little-endian).
func argLow(i int) uint32 { return 16 + 8*uint32(i) }

// seccompProgram assembles the filter: blocks that each test one syscall
// and end in their own return, so every jump is short and forward.
func seccompProgram() []unix.SockFilter {
	allow := stmt(ret, unix.SECCOMP_RET_ALLOW)
	eperm := stmt(ret, seccompRetErrn|uint32(unix.EPERM))
	p := []unix.SockFilter{
		stmt(ldAbs, offArc),
		jump(jeq, unix.AUDIT_ARCH_X86_64, 1, 0),
		eperm,
		stmt(ldAbs, offNr),
		jump(jge, x32SyscallBit, 0, 1),
		eperm,
	}
	for _, d := range denied {
		p = append(p, jump(jeq, d.nr, 0, 1), stmt(ret, seccompRetErrn|uint32(d.errno)))
	}
	for _, r := range modeRules {
		// ld nr; jeq nr (else skip the block); ld arg; jset priv -> eperm;
		// [and S_IFMT; jeq CHR -> eperm; jeq BLK -> eperm;] allow; eperm
		body := []unix.SockFilter{stmt(ldAbs, argLow(r.arg))}
		checks := []unix.SockFilter{jump(jset, modePrivBits, 0, 0)}
		if r.dev {
			checks = append(checks, stmt(andK, unix.S_IFMT), jump(jeq, unix.S_IFCHR, 0, 0), jump(jeq, unix.S_IFBLK, 0, 0))
		}
		for i := range checks {
			if checks[i].Code&0x07 == unix.BPF_JMP {
				// Jump to the block's eperm, after the remaining checks and allow.
				checks[i].Jt = uint8(len(checks) - i)
			}
		}
		body = append(body, checks...)
		body = append(body, allow, eperm)
		p = append(p, stmt(ldAbs, offNr), jump(jeq, r.nr, 0, uint8(len(body))))
		p = append(p, body...)
	}
	return append(p, allow)
}
