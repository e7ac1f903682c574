package cli

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/pty"
)

// attachTo starts a hub with stdin on a socket of a temporary attach
// directory and returns a connected client.
func attachTo(t *testing.T, hub *attachHub) net.Conn {
	t.Helper()
	attachDir = t.TempDir()
	l, err := listenAttach("c1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go hub.serve(l)
	conn, err := net.Dial("unix", attachSock("c1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Its first frame says it is attached: it gets all output from now on.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if kind, _, err := readFrame(conn); err != nil || kind != attachReady {
		t.Fatalf("first frame %d, %v; want ready", kind, err)
	}
	conn.SetReadDeadline(time.Time{})
	return conn
}

func TestAttachHub(t *testing.T) {
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	hub := newAttachHub(inW)
	conn := attachTo(t, hub)

	// The container's output, each stream as written, in order.
	io.WriteString(hub.stream(attachStdout), "hello\n")
	io.WriteString(hub.stream(attachStderr), "oops")
	io.WriteString(hub.stream(attachStdout), "world\n")
	var out, errb bytes.Buffer
	for out.Len()+errb.Len() < len("hello\noopsworld\n") {
		kind, p, err := readFrame(conn)
		if err != nil {
			t.Fatalf("after %q, %q: %v", out.String(), errb.String(), err)
		}
		map[byte]*bytes.Buffer{attachStdout: &out, attachStderr: &errb}[kind].Write(p)
	}
	if out.String() != "hello\nworld\n" || errb.String() != "oops" {
		t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
	}

	// The client's input is the container's stdin, and its end of input
	// does not close it (another attach may follow).
	conn.Write(frame(attachInput, []byte("input\n")))
	conn.Write(frame(attachResize, []byte{0, 80, 0, 24})) // no terminal: nothing to resize
	conn.(*net.UnixConn).CloseWrite()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(inR, buf); err != nil || string(buf) != "input\n" {
		t.Errorf("the container's stdin read %q, %v", buf, err)
	}
	inR.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := inR.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the container's stdin after the client's end of input: %v, want it open", err)
	}

	// The end: the exit code, then the connection closes; later clients
	// are refused.
	hub.end(-2)
	kind, p, err := readFrame(conn)
	if err != nil || kind != attachExit || int32(binary.BigEndian.Uint32(p)) != -2 {
		t.Fatalf("end: frame %d %v, %v; want the exit code -2", kind, p, err)
	}
	if _, _, err := readFrame(conn); !errors.Is(err, io.EOF) {
		t.Errorf("after the exit code: %v, want EOF", err)
	}
	late, err := net.Dial("unix", attachSock("c1"))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	late.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := readFrame(late); !errors.Is(err, io.EOF) {
		t.Errorf("a client after the end: %v, want it hung up on", err)
	}
}

// TestAttachHubLetsASlowClientGo: a client that reads nothing is let go
// once it is attachQueue frames behind; the container's output (and so
// its log) never waits for it.
func TestAttachHubLetsASlowClientGo(t *testing.T) {
	hub := newAttachHub(nil)
	conn := attachTo(t, hub)
	chunk := strings.Repeat("x", 1024)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 4*attachQueue; i++ {
			io.WriteString(hub.stream(attachStdout), chunk)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the container's output waited for a client that reads nothing")
	}
	hub.mu.Lock()
	n := len(hub.clients)
	hub.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d clients still attached, want the slow one let go", n)
	}
	// What it was sent before is still delivered, then it ends without
	// an exit code.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	frames := 0
	for {
		kind, _, err := readFrame(conn)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after %d frames: %v, want EOF", frames, err)
			}
			break
		}
		if kind != attachStdout {
			t.Fatalf("frame kind %d", kind)
		}
		frames++
	}
	if frames < attachQueue || frames >= 4*attachQueue {
		t.Errorf("the slow client got %d frames, want its queue's worth (%d) and what the socket held", frames, attachQueue)
	}
}

func TestReadFrameRefusesHugeFrames(t *testing.T) {
	var b bytes.Buffer
	b.Write([]byte{attachStdout, 0x10, 0, 0, 0})
	if _, _, err := readFrame(&b); err == nil {
		t.Error("a frame of 256 MiB was accepted")
	}
	if kind, p, err := readFrame(bytes.NewReader(frame(attachStderr, []byte("ab")))); err != nil || kind != attachStderr || string(p) != "ab" {
		t.Errorf("round trip: %d %q %v", kind, p, err)
	}
}

func TestDetachKeys(t *testing.T) {
	for _, c := range []struct {
		chunks []string
		sent   string
		detach bool
	}{
		{[]string{"ls\r"}, "ls\r", false},
		{[]string{"ab\x10\x11cd"}, "ab", true},
		{[]string{"ab\x10", "\x11"}, "ab", true},      // the sequence split between reads
		{[]string{"a\x10b", "\x10"}, "a\x10b", false}, // a ^P alone is sent with what follows
		{[]string{"\x10\x10\x11"}, "\x10", true},
	} {
		var d detachKeys
		var sent string
		detach := false
		for _, ch := range c.chunks {
			p, det := d.scan([]byte(ch))
			sent += string(p)
			if det {
				detach = true
				break
			}
		}
		if sent != c.sent || detach != c.detach {
			t.Errorf("%q: sent %q, detach %v; want %q, %v", c.chunks, sent, detach, c.sent, c.detach)
		}
	}
}

// TestAttachTerminal: a terminal master received as the runtime sends it
// (runc's --console-socket) is what clients type into and resize.
func TestAttachTerminal(t *testing.T) {
	attachDir = t.TempDir()
	lf, path, err := consoleListener("c1")
	if err != nil {
		t.Fatal(err)
	}
	master, slave, err := pty.Open()
	if err != nil {
		t.Skip(err)
	}
	defer slave.Close()
	got := make(chan *os.File, 1)
	go func() {
		m, err := receiveTerminal(lf)
		if err != nil {
			t.Error(err)
		}
		got <- m
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.(*net.UnixConn).WriteMsgUnix([]byte("ptmx"), unix.UnixRights(int(master.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	c.Close()
	master.Close()
	m := <-got
	if m == nil {
		t.FailNow()
	}
	defer m.Close()

	hub := newAttachHub(nil)
	hub.setTerminal(m, true)
	conn := attachTo(t, hub)
	var size [4]byte
	binary.BigEndian.PutUint16(size[:], 123)
	binary.BigEndian.PutUint16(size[2:], 45)
	conn.Write(frame(attachResize, size[:]))
	conn.Write(frame(attachInput, []byte("typed\n")))
	buf := make([]byte, 64)
	slave.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := slave.Read(buf)
	if err != nil || string(buf[:n]) != "typed\n" {
		t.Errorf("the terminal's slave read %q, %v", buf[:n], err)
	}
	ws, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col != 123 || ws.Row != 45 {
		t.Errorf("the terminal's size: %+v, %v; want 123x45", ws, err)
	}
}

// A container that does not read its input holds up no resize.
func TestAttachResizeWhileInputIsStuck(t *testing.T) {
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	hub := newAttachHub(inW) // inR is never read: the pipe fills
	resized := make(chan [2]uint16, 1)
	hub.resize = func(cols, rows uint16) { resized <- [2]uint16{cols, rows} }
	conn := attachTo(t, hub)
	big := bytes.Repeat([]byte("x"), 128<<10) // more than a pipe holds
	conn.Write(frame(attachInput, big))
	var p [4]byte
	binary.BigEndian.PutUint16(p[:], 120)
	binary.BigEndian.PutUint16(p[2:], 40)
	conn.Write(frame(attachResize, p[:]))
	select {
	case got := <-resized:
		if got != [2]uint16{120, 40} {
			t.Errorf("resized to %v, want 120x40", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a resize waited for input the container does not read")
	}
	// What was typed still reaches the container once it reads.
	b := make([]byte, 1024)
	if n, err := inR.Read(b); err != nil || n == 0 || b[0] != 'x' {
		t.Errorf("input after the resize: %d %v", n, err)
	}
}
