package directinit

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/seccompbpf"
)

// A seccomp filter is compiled by libseccomp (through libcontainer's
// seccomp package) and loaded by the process it confines. Compiling a
// container runtime's default profile (some 330 system calls on three
// architectures) takes ~20 ms natively and ~100 ms under TCG, for every
// container and every exec. So each profile is compiled once, in a helper
// (the agent's own binary, which has libseccomp: CaptureSeccomp) whose
// load the compiling process intercepts (seccompbpf.Capture), and every
// process of that profile is handed the program to load as it is: the
// same instructions and flags libcontainer would have loaded. The host
// compiles a container's profile natively with the same helper and hands
// the program over; the agent compiles one the host did not. lodge-init
// only loads programs, so it is built without cgo.

// CaptureArg, as the first step's last argument, makes it a seccomp
// capture helper of a profile in libcontainer's form (configs.Seccomp as
// JSON on seccompbpf.ConfigFd) instead of a container's first step.
const CaptureArg = "capture-seccomp"

// SeccompProgram is a compiled filter, as the first step loads it.
type SeccompProgram = seccompbpf.Program

// captureMain is the capture helper of CaptureArg.
func captureMain() error {
	var s configs.Seccomp
	if err := json.NewDecoder(os.NewFile(seccompbpf.ConfigFd, "capture-config")).Decode(&s); err != nil {
		return fmt.Errorf("seccomp capture: config: %w", err)
	}
	return CaptureSeccomp(&s)
}

// CaptureSeccomp is a capture helper's work (seccompbpf.Helper): it
// compiles s with libcontainer's InitSeccomp on a thread whose loads of a
// filter are handed to a listener, sent on seccompbpf.ListenerFd, instead
// of the kernel. Nothing is confined by it; the helper then exits. It
// needs no privilege: it takes no_new_privs for its trap filter.
func CaptureSeccomp(s *configs.Seccomp) error {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp capture: no_new_privs: %w", err)
	}
	listener, err := trapFilterLoads()
	if err != nil {
		return fmt.Errorf("seccomp capture: %w", err)
	}
	rights := unix.UnixRights(listener)
	if err := unix.Sendmsg(seccompbpf.ListenerFd, []byte{'L'}, rights, nil, 0); err != nil {
		return fmt.Errorf("seccomp capture: send the listener: %w", err)
	}
	unix.Close(listener)
	if _, err := seccomp.InitSeccomp(s); err != nil {
		return fmt.Errorf("seccomp capture: %w", err)
	}
	return nil
}

// seccompDataArg0 is the offset of the low half of a system call's first
// argument in struct seccomp_data (nr, arch, instruction pointer, args).
const seccompDataArg0 = 16

// trapFilterLoads installs, on the calling thread, a filter that hands
// seccomp(SECCOMP_SET_MODE_FILTER, ...) and prctl(PR_SET_SECCOMP,
// SECCOMP_MODE_FILTER, ...) to a listener, and returns the listener.
func trapFilterLoads() (int, error) {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		return -1, fmt.Errorf("no audit architecture for %s", runtime.GOARCH)
	}
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
	)
	f := []unix.SockFilter{
		{Code: ld, K: 4}, // arch
		{Code: jeq, K: arch, Jf: 7},
		{Code: ld, K: 0}, // nr
		{Code: jeq, K: uint32(unix.SYS_SECCOMP), Jf: 2},
		{Code: ld, K: seccompDataArg0},
		{Code: jeq, K: unix.SECCOMP_SET_MODE_FILTER, Jt: 4, Jf: 3},
		{Code: jeq, K: uint32(unix.SYS_PRCTL), Jf: 2},
		{Code: ld, K: seccompDataArg0},
		{Code: jeq, K: unix.PR_SET_SECCOMP, Jt: 1},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
		{Code: ret, K: unix.SECCOMP_RET_USER_NOTIF},
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	fd, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER,
		uintptr(unsafe.Pointer(&prog)))
	runtime.KeepAlive(f)
	if errno != 0 {
		return -1, fmt.Errorf("install the capture filter: %w", errno)
	}
	return int(fd), nil
}

// auditArch is the AUDIT_ARCH_* value of a Go architecture Lodge's guests
// run on.
var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}
