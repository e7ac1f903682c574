package agent

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/guest/directinit"
)

// seccompPrograms holds each seccomp profile's filter as compiled once
// (directinit's seccomp_linux.go says why), by the profile's content.
type seccompPrograms struct {
	mu sync.Mutex
	m  map[[32]byte]*directinit.SeccompProgram
}

// compiledSeccomp is the guest's: one agent per guest.
var compiledSeccomp seccompPrograms

// maxSeccompPrograms bounds the programs kept (a few KB each); past it
// they are all dropped, and compiled again as they are needed.
const maxSeccompPrograms = 32

// captureWait bounds a capture: a profile compiles in ~100 ms under TCG.
const captureWait = 20 * time.Second

// forFirstStep sets in's compiled filter, if in has a filter, and says
// how long compiling it took (0 if it had been compiled before, or there
// is no filter).
func (p *seccompPrograms) forFirstStep(in *directinit.Config) (time.Duration, error) {
	if in.Seccomp == nil || in.SeccompProgram != nil {
		return 0, nil
	}
	prog, took, err := p.program(in.Seccomp)
	if err != nil {
		return 0, err
	}
	in.SeccompProgram = prog
	return took, nil
}

// program returns s's compiled filter, compiling it the first time s is
// seen, and how long that took (0 when it was already compiled).
func (p *seccompPrograms) program(s *configs.Seccomp) (*directinit.SeccompProgram, time.Duration, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, 0, err
	}
	key := sha256.Sum256(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if prog, ok := p.m[key]; ok {
		return prog, 0, nil
	}
	t := time.Now()
	prog, err := captureSeccomp(b)
	if err != nil {
		return nil, 0, err
	}
	if p.m == nil || len(p.m) >= maxSeccompPrograms {
		p.m = map[[32]byte]*directinit.SeccompProgram{}
	}
	p.m[key] = prog
	return prog, max(time.Since(t), time.Nanosecond), nil
}

// captureSeccomp runs the capture helper on profile (JSON) and returns the
// program its InitSeccomp loaded. The helper is the agent's own binary,
// which has libseccomp (lodge-init has not: it only loads programs). It
// runs within a process's start, while the reaper leaves the agent's
// children to their waiters, so the helper is this function's to wait for.
func captureSeccomp(profile []byte) (*directinit.SeccompProgram, error) {
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
	cmd := &exec.Cmd{Path: "/proc/self/exe", Args: []string{os.Args[0], DirectArg, directinit.CaptureArg}, Env: []string{},
		ExtraFiles: []*os.File{cfgR, theirs}, Stderr: &stderr}
	err = cmd.Start()
	cfgR.Close()
	theirs.Close()
	if err != nil {
		cfgW.Close()
		return nil, fmt.Errorf("start the seccomp capture: %w", err)
	}
	deadline := time.Now().Add(captureWait)
	timer := time.AfterFunc(captureWait, func() { cmd.Process.Kill() })
	defer timer.Stop()
	cfgW.Write(profile) // (a helper that reads less says so)
	cfgW.Close()
	prog, err := serveCapture(ours, cmd.Process.Pid, deadline)
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

// afterCaptureRead, if set (by tests), runs once a capture has read the
// helper's program and before it checks the call is still waiting.
var afterCaptureRead func(helper int)

// serveCapture receives the helper's listener on sock and answers its
// system calls until it loads a filter, whose program it returns.
func serveCapture(sock *os.File, pid int, deadline time.Time) (*directinit.SeccompProgram, error) {
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
		var prog *directinit.SeccompProgram
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
		if prog != nil && afterCaptureRead != nil {
			afterCaptureRead(pid)
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
			return prog, nil
		}
	}
}

// readProgram reads the struct sock_fprog at addr in mem and its
// instructions.
func readProgram(mem *os.File, flags uint, addr uint64) (*directinit.SeccompProgram, error) {
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
	return &directinit.SeccompProgram{Flags: flags, Filter: filter}, nil
}
