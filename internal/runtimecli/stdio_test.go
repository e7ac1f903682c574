package runtimecli

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/pty"
	"github.com/lodgeruntime/lodge/internal/shim"
)

// A terminal passed as an exec's stdin is let go of when its stdio is
// closed, although a read on it is blocked: the exec's end must not wait
// for the next keystroke on the caller's terminal. The passed descriptor
// itself stays blocking (it is the caller's open file too).
func TestPassedTerminalLetGo(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	// As a pass gives it: a blocking descriptor made a File.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(slave.Fd())), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	passed := os.NewFile(uintptr(fd), "passed")
	slave.Close()
	fds := &fdStore{pending: map[string][]*os.File{}}
	const token = "0123456789abcdef0123456789abcdef"
	if !fds.put(token, []*os.File{passed, passed, passed}) {
		t.Fatal("put")
	}
	o := &cliStdio{fds: fds}
	s, closer, err := o.Open(context.Background(), shim.StdioRequest{ID: "c", ExecID: "e", Terminal: true,
		Stdin: schemeFDPass + token + "/0", Stdout: schemeFDPass + token + "/1"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Stdin == passed {
		t.Fatal("stdin is the passed descriptor itself, whose blocked read holds it open")
	}
	ended := make(chan error, 1)
	go func() {
		_, err := s.Stdin.Read(make([]byte, 1))
		ended <- err
	}()
	time.Sleep(100 * time.Millisecond) // the read is blocked
	closer.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Error("the read returned data, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("closing the exec's stdio did not end a read blocked on its terminal")
	}
	// A stdin that is no terminal is used as passed.
	r, w, _ := os.Pipe()
	defer w.Close()
	if own := ownTerminal(r); own != nil {
		t.Errorf("a pipe opened again as a terminal")
	}
	r.Close()
}
