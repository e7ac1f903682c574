package agent

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
)

// Ioctls of the kernel's RNG (linux/random.h).
const (
	rndAddEntropy  = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG  = 0x5207     // _IO('R', 0x07)
	minSeed        = 32
	maxSeed        = 512
	machineIDFile  = "/etc/machine-id"
	maxHostnameLen = 64
)

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

// validateIdentify checks what the host sends before any of it is used.
func validateIdentify(req *agentv1.IdentifyRequest) error {
	if n := len(req.Seed); n < minSeed || n > maxSeed {
		return fmt.Errorf("seed of %d bytes, want %d..%d", n, minSeed, maxSeed)
	}
	if b, err := hex.DecodeString(req.MachineId); err != nil || len(b) != 16 {
		return fmt.Errorf("machine id %q is not 32 hex digits", req.MachineId)
	}
	if len(req.Hostname) > maxHostnameLen || !hostnameRE.MatchString(req.Hostname) {
		return fmt.Errorf("invalid hostname %q", req.Hostname)
	}
	if req.TimeUnixNano <= 0 {
		return fmt.Errorf("invalid time %d", req.TimeUnixNano)
	}
	return nil
}

// Identify makes the guest its own: the host's seed credited to the RNG
// and the kernel's CRNG reseeded from it (so no two clones of a template
// draw the same numbers), the host's wall clock (a clone resumes at the
// template's time), a machine id and a hostname. The guest's boot_id is
// drawn by the kernel at its first read, which the agent never does before
// this call.
func (h *health) Identify(ctx context.Context, req *agentv1.IdentifyRequest) (*agentv1.Empty, error) {
	if err := validateIdentify(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := reseed(req.Seed); err != nil {
		return nil, status.Errorf(codes.Internal, "reseed the RNG: %v", err)
	}
	ts := unix.NsecToTimespec(req.TimeUnixNano)
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return nil, status.Errorf(codes.Internal, "set the clock: %v", err)
	}
	os.MkdirAll("/etc", 0o755)
	os.Remove(machineIDFile)
	if err := os.WriteFile(machineIDFile, []byte(req.MachineId+"\n"), 0o444); err != nil {
		return nil, status.Errorf(codes.Internal, "write %s: %v", machineIDFile, err)
	}
	if err := unix.Sethostname([]byte(req.Hostname)); err != nil {
		return nil, status.Errorf(codes.Internal, "set hostname: %v", err)
	}
	return &agentv1.Empty{}, nil
}

// reseed adds seed to the input pool, crediting its bits, and has the
// CRNG reseed from the pool at once.
func reseed(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(seed))
	binary.NativeEndian.PutUint32(info[0:], uint32(len(seed)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(seed)))
	copy(info[8:], seed)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}
