package boot

import (
	"fmt"
	"os"

	"github.com/opencontainers/runc/libcontainer/exeseal"
	"golang.org/x/sys/unix"
)

// SealSelf re-executes the agent from a sealed, read-only memfd copy of
// itself, once, at boot. libcontainer then sees /proc/self/exe as already
// cloned and skips its per-container copy of the binary (which guards
// against CVE-2019-5736: a container overwriting the runtime binary). The
// guest kernel has no overlayfs loaded, so that copy would otherwise be a
// full memfd copy on every container start and every exec.
func SealSelf() error {
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	st, err := self.Stat()
	if err != nil {
		return err
	}
	sealed, err := exeseal.CloneBinary(self, st.Size(), "lodge-agent", "/")
	self.Close()
	if err != nil {
		return fmt.Errorf("seal agent binary: %w", err)
	}
	path := fmt.Sprintf("/proc/self/fd/%d", sealed.Fd())
	return unix.Exec(path, os.Args, os.Environ())
}

// Sealed reports whether the agent already runs from its sealed copy (it
// needs /proc, so it is false before Setup).
func Sealed() bool { return exeseal.IsSelfExeCloned() }

// InitPath is where the initrd holds lodge-init, a direct container's
// first step (internal/guest/directinit; guestimage.InitPath).
const InitPath = "/lodge/lodge-init"

// sealedInit keeps the sealed copy of lodge-init open for the agent's
// life (its path names the descriptor).
var sealedInit *os.File

// SealInit copies lodge-init into a sealed, read-only memfd, as SealSelf
// does the agent, and returns the path the agent executes it by: no
// container can change the binary another container's start runs. It
// returns "" and the error where the initrd has no lodge-init. The file
// itself is removed once sealed.
func SealInit() (string, error) {
	f, err := os.Open(InitPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	sealed, err := exeseal.CloneBinary(f, st.Size(), "lodge-init", "/")
	if err != nil {
		return "", fmt.Errorf("seal lodge-init: %w", err)
	}
	os.Remove(InitPath) // the sealed copy is the one in use; free the guest's tmpfs
	// A descriptor number above any a child is given (exec.Cmd's
	// ExtraFiles land on 3, 4...): the child opens the path before its
	// descriptors are set up.
	fd, err := unix.FcntlInt(sealed.Fd(), unix.F_DUPFD_CLOEXEC, 100)
	sealed.Close()
	if err != nil {
		return "", fmt.Errorf("seal lodge-init: %w", err)
	}
	sealedInit = os.NewFile(uintptr(fd), "lodge-init")
	return fmt.Sprintf("/proc/self/fd/%d", fd), nil
}
