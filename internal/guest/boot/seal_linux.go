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
