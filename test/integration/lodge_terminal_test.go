package integration

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/pty"
)

// TestLodgeTerminal: `lodge run -it` and `exec -it` on a terminal, as a
// user's shell runs them: the guest's terminal takes the user's size, and
// the user's terminal is raw while they run (one echo of what is typed,
// lines ending in \r\n) and restored after.
func TestLodgeTerminal(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	// onTerminal runs lodge with args on a new terminal of 101x31 whose
	// user types input once the container has printed ready, and returns
	// what the terminal showed and the terminal's echo flag after.
	onTerminal := func(input string, args ...string) (string, bool) {
		t.Helper()
		master, slave, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer master.Close()
		// Through SyscallConn: Fd would make the master blocking, and its
		// read deadlines void.
		if rc, err := master.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: 101, Row: 31}) })
		}
		cmd := exec.Command(l.bin, args...)
		cmd.Env = l.env
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		buf := make([]byte, 4096)
		master.SetReadDeadline(time.Now().Add(2 * time.Minute))
		for !strings.Contains(out.String(), "ready") {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		master.Write([]byte(input))
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		for {
			n, err := master.Read(buf)
			out.Write(buf[:n])
			if strings.Contains(out.String(), "done") || err != nil {
				break
			}
		}
		if err := <-waited; err != nil {
			t.Errorf("lodge %v: %v\n%q", args, err, out.String())
		}
		st, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		slave.Close()
		return out.String(), err == nil && st.Lflag&unix.ECHO != 0
	}
	script := `stty size; echo ready; read line; echo "got:$line"; echo done`
	out, echo := onTerminal("typed\r", "run", "--rm", "-it", ref, "sh", "-c", script)
	if !strings.Contains(out, "31 101") || strings.Count(out, "typed") != 2 || !strings.Contains(out, "got:typed\r\n") || strings.Contains(out, "\r\r") {
		t.Errorf("run -it on a 101x31 terminal showed %q; want its size, one echo and \\r\\n", out)
	}
	if !echo {
		t.Error("the user's terminal was left raw after run -it")
	}
	id := strings.TrimSpace(l.must("run", "-d", ref, "sleep", "300"))
	defer l.run("", "rm", "-f", id)
	out, echo = onTerminal("typed\r", "exec", "-it", id, "sh", "-c", script)
	if !strings.Contains(out, "31 101") || strings.Count(out, "typed") != 2 || !strings.Contains(out, "got:typed\r\n") {
		t.Errorf("exec -it on a 101x31 terminal showed %q; want its size and one echo", out)
	}
	if !echo {
		t.Error("the user's terminal was left raw after exec -it")
	}
	// attach to a -dit container: its terminal takes the attached one's
	// size (it waits for it), and what the user types reaches it once.
	l.must("run", "-dit", "--name", "sized", ref, "sh", "-c",
		`i=0; until [ "$(stty size)" = "31 101" ]; do i=$((i+1)); [ $i -gt 150 ] && echo never-sized && exit 1; sleep 0.2; done; `+script)
	defer l.run("", "rm", "-f", "sized")
	out, echo = onTerminal("typed\r", "attach", "sized")
	if !strings.Contains(out, "ready") || strings.Count(out, "typed") != 2 || !strings.Contains(out, "got:typed\r\n") {
		t.Errorf("attach on a 101x31 terminal showed %q; want its size taken, one echo", out)
	}
	if !echo {
		t.Error("the user's terminal was left raw after attach")
	}
}
