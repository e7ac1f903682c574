package seccompbpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SpecArg, as the agent binary's first argument, makes it a capture
// helper of a profile in the runtime spec's form (specs.LinuxSeccomp as
// JSON): the host's compiler runs it natively.
const SpecArg = "seccomp-spec"

// The capture helper's file descriptors.
const (
	ConfigFd   = 3 // the profile, as the helper's mode reads it
	ListenerFd = 4 // a unix socket the helper sends its listener on
)

// Helper is how a capture starts its helper: a program that reads a
// profile on ConfigFd, installs a filter that hands its own loads of a
// filter to a listener, sends that listener on ListenerFd and then
// compiles and loads the profile (directinit.CaptureSeccomp).
type Helper struct {
	Path string
	Args []string
	// Cred, if set, is the user the helper runs as; the capture reads the
	// helper's memory, which then takes CAP_SYS_PTRACE.
	Cred *syscall.Credential
	// AfterRead, if set (by tests), runs once the capture has read the
	// helper's program and before it checks the call is still waiting.
	AfterRead func(helper int)
}

// Capture runs h on profile and returns the program the helper loaded,
// which confines nothing: the helper's load returns as if it had, and the
// helper exits. ctx bounds the whole capture.
//
//	capture                               helper (h)
//	  start, profile on ConfigFd  ------>  read the profile
//	                                      install the trap filter
//	  receive the listener        <------ send its listener (ListenerFd)
//	                                      compile (libseccomp), load:
//	  read the program from the   <------   seccomp(SET_MODE_FILTER) waits
//	  helper's memory; answer     ------>   returns 0
//	  wait                                exit 0
func Capture(ctx context.Context, h Helper, profile []byte) (*Program, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "capture"), os.NewFile(uintptr(pair[1]), "capture-helper")
	defer ours.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		theirs.Close()
		return nil, err
	}
	var stderr strings.Builder
	cmd := &exec.Cmd{Path: h.Path, Args: h.Args, Env: []string{}, ExtraFiles: []*os.File{cfgR, theirs},
		Stderr: &stderr, SysProcAttr: &syscall.SysProcAttr{Credential: h.Cred, Pdeathsig: syscall.SIGKILL}}
	err = cmd.Start()
	cfgR.Close()
	theirs.Close()
	if err != nil {
		cfgW.Close()
		return nil, fmt.Errorf("start the seccomp capture: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	cfgW.Write(profile) // (a helper that reads less says so)
	cfgW.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Minute)
	}
	prog, err := serve(ours, cmd.Process.Pid, deadline, h.AfterRead)
	if err != nil {
		cmd.Process.Kill()
	}
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("%w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		return nil, fmt.Errorf("seccomp capture: %w", err)
	}
	return prog, nil
}

// The kernel's struct seccomp_notif and struct seccomp_notif_resp.
type seccompNotif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

const seccompIoctlNotifIDValid = 0x40082102 // SECCOMP_IOCTL_NOTIF_ID_VALID

// serve receives the helper's listener on sock and answers its system
// calls until it loads a filter, whose program it returns.
func serve(sock *os.File, pid int, deadline time.Time, afterRead func(int)) (*Program, error) {
	conn, err := net.FileConn(sock)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	uc.SetDeadline(deadline)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := uc.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return nil, fmt.Errorf("receive the listener: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, errors.New("receive the listener: no descriptor")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, errors.New("receive the listener: no descriptor")
	}
	listener := fds[0]
	defer unix.Close(listener)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms <= 0 {
			return nil, errors.New("the helper did not load a filter in time")
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(listener), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return nil, fmt.Errorf("wait for the filter's load: %v", err)
		}
		var req seccompNotif
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_RECV,
			uintptr(unsafe.Pointer(&req))); errno == unix.ENOENT || errno == unix.EINTR {
			continue // the call was interrupted (Go's preemption signal) and is made again
		} else if errno != 0 {
			return nil, fmt.Errorf("the helper ended before it loaded a filter: %w", errno)
		}
		resp := seccompNotifResp{ID: req.ID}
		var prog *Program
		switch {
		case req.Args[2] == 0:
			// A probe of what the kernel supports: as it is.
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		case req.Nr == unix.SYS_SECCOMP:
			prog, err = readProgram(mem, uint(req.Args[1]), req.Args[2])
		case req.Args[1] == unix.SECCOMP_MODE_FILTER:
			prog, err = readProgram(mem, 0, req.Args[2])
		default:
			err = fmt.Errorf("an unexpected prctl(PR_SET_SECCOMP, %d)", req.Args[1])
		}
		if err != nil {
			return nil, err
		}
		if prog != nil && afterRead != nil {
			afterRead(pid)
		}
		// The program was read from the process that made the call, which
		// still waits in it. A signal (Go's preemption signal) ends the
		// wait: the call is made again, and so notified again.
		id := req.ID
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), seccompIoctlNotifIDValid,
			uintptr(unsafe.Pointer(&id))); errno == unix.ENOENT {
			continue
		} else if errno != 0 {
			return nil, fmt.Errorf("the helper's load: %w", errno)
		}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_SEND,
			uintptr(unsafe.Pointer(&resp))); errno == unix.ENOENT {
			continue
		} else if errno != 0 {
			return nil, fmt.Errorf("answer the helper: %w", errno)
		}
		if prog != nil {
			if err := prog.Check(); err != nil {
				return nil, err
			}
			return prog, nil
		}
	}
}

// readProgram reads the struct sock_fprog at addr in mem and its
// instructions.
func readProgram(mem *os.File, flags uint, addr uint64) (*Program, error) {
	var hdr [16]byte // unsigned short len; struct sock_filter *filter
	if _, err := mem.ReadAt(hdr[:], int64(addr)); err != nil {
		return nil, fmt.Errorf("read the filter: %w", err)
	}
	n := int(binary.NativeEndian.Uint16(hdr[0:]))
	if n == 0 {
		return nil, errors.New("read the filter: an empty program")
	}
	filter := make([]byte, 8*n)
	if _, err := mem.ReadAt(filter, int64(binary.NativeEndian.Uint64(hdr[8:]))); err != nil {
		return nil, fmt.Errorf("read the filter: %w", err)
	}
	return &Program{Flags: flags, Filter: filter}, nil
}
