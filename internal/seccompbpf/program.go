package seccompbpf

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxInstructions is the kernel's BPF_MAXINSNS: a longer program is
// refused at load.
const maxInstructions = 4096

// Program is a compiled seccomp filter as libcontainer loads it: the flags
// of seccomp(2) (0: prctl(2)'s PR_SET_SECCOMP) and the instructions, each
// the 8 bytes of a struct sock_filter in the machine's byte order.
type Program struct {
	Flags  uint
	Filter []byte
}

// Check says whether p is shaped as a program the kernel could load.
func (p *Program) Check() error {
	if n := len(p.Filter); n == 0 || n%8 != 0 || n/8 > maxInstructions {
		return fmt.Errorf("seccomp: a malformed program (%d bytes)", n)
	}
	return nil
}

// Load loads the program into the calling thread, as libcontainer loads
// the filter it compiled.
func (p *Program) Load() error {
	if err := p.Check(); err != nil {
		return err
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

// FlagsSupported says whether this kernel knows every flag of seccomp(2)
// in flags: a program compiled where another kernel answered libseccomp's
// probes may carry one this kernel would refuse at load. It asks the
// kernel with a load of no program, which fails with EFAULT once the
// flags are accepted, and installs nothing.
func FlagsSupported(flags uint) bool {
	if flags == 0 {
		return true // prctl(2)'s load, which every seccomp kernel has
	}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), 0)
	return errors.Is(errno, unix.EFAULT)
}
