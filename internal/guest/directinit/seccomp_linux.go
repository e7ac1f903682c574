package directinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

// A seccomp filter is compiled by libseccomp (through libcontainer's
// seccomp package) and loaded by the process it confines. Compiling a
// container runtime's default profile (some 330 system calls on three
// architectures) takes ~20 ms natively and ~100 ms under TCG, for every
// container and every exec. So the agent compiles each profile once, in a
// helper (CaptureArg: the agent's own binary, which has libseccomp) that
// runs libcontainer's own InitSeccomp and whose load the agent
// intercepts, and hands every process of that profile the program to load
// as it is: the same instructions and flags libcontainer would have
// loaded. lodge-init only loads programs, so it is built without cgo.

// CaptureArg, as the first step's last argument, makes it a seccomp
// capture helper (see captureMain) instead of a container's first step.
const CaptureArg = "capture-seccomp"

// The capture helper's file descriptors.
const (
	CaptureConfigFd   = 3 // configs.Seccomp as JSON
	CaptureListenerFd = 4 // a unix socket the listener's descriptor is sent on
)

// SeccompProgram is a compiled seccomp filter as libcontainer loads it:
// the flags of seccomp(2) (0: prctl(2)'s PR_SET_SECCOMP) and the
// instructions, each the 8 bytes of a struct sock_filter.
type SeccompProgram struct {
	Flags  uint
	Filter []byte
}

// load loads the program into the calling thread, as libcontainer loads
// the filter it compiled.
func (p *SeccompProgram) load() error {
	if len(p.Filter) == 0 || len(p.Filter)%8 != 0 || len(p.Filter)/8 > 0xffff {
		return errors.New("seccomp: a malformed program")
	}
	prog := unix.SockFprog{Len: uint16(len(p.Filter) / 8), Filter: (*unix.SockFilter)(unsafe.Pointer(&p.Filter[0]))}
	var err error
	if p.Flags == 0 {
		err = unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0)
	} else if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(p.Flags),
		uintptr(unsafe.Pointer(&prog))); errno != 0 {
		err = errno
	}
	runtime.KeepAlive(p)
	if err != nil {
		return fmt.Errorf("seccomp: load the filter: %w", err)
	}
	return nil
}

// captureMain compiles the filter of the profile on CaptureConfigFd with
// libcontainer's InitSeccomp, on a thread whose loads of a filter are
// handed to a listener (sent on CaptureListenerFd) instead of the kernel:
// the agent reads the program from the load's arguments and lets it
// return as loaded. Nothing is confined by it; the helper then exits.
func captureMain() error {
	runtime.LockOSThread()
	var s configs.Seccomp
	if err := json.NewDecoder(os.NewFile(CaptureConfigFd, "capture-config")).Decode(&s); err != nil {
		return fmt.Errorf("seccomp capture: config: %w", err)
	}
	listener, err := trapFilterLoads()
	if err != nil {
		return fmt.Errorf("seccomp capture: %w", err)
	}
	rights := unix.UnixRights(listener)
	if err := unix.Sendmsg(CaptureListenerFd, []byte{'L'}, rights, nil, 0); err != nil {
		return fmt.Errorf("seccomp capture: send the listener: %w", err)
	}
	unix.Close(listener)
	if _, err := seccomp.InitSeccomp(&s); err != nil {
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
