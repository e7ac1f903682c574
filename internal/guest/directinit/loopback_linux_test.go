package directinit

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// loopbackUp brings up the loopback interface of the calling thread's
// network namespace (a new one is made with it down), and again is a no-op.
func TestLoopbackUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	errc := make(chan error, 1)
	var before, after, again uint16
	go func() {
		// The thread ends with the goroutine (never unlocked): it keeps the
		// namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		flags := func() uint16 {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Error(err)
				return 0
			}
			defer unix.Close(fd)
			ifr, _ := unix.NewIfreq("lo")
			if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
				t.Error(err)
			}
			return ifr.Uint16()
		}
		before = flags()
		err := loopbackUp()
		after = flags()
		if err == nil {
			err = loopbackUp()
		}
		again = flags()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if before&unix.IFF_UP != 0 {
		t.Fatalf("lo of a new namespace is up before (flags %#x): the test proves nothing", before)
	}
	for _, f := range []uint16{after, again} {
		if f&unix.IFF_UP == 0 || f&unix.IFF_LOOPBACK == 0 {
			t.Fatalf("lo flags %#x after loopbackUp, want up", f)
		}
	}
}
