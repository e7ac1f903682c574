package cli

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// A detached container's streams belong to its log helper (__logger),
// which outlives `lodge run -d`. `lodge attach` reaches them through the
// helper's socket: the helper sends what the container writes, as it
// writes it, in frames (attachStdout, attachStderr), and, once the
// container has ended and its output is flushed, one attachExit frame
// with its exit code; what an attached client sends is the container's
// stdin, where the container was made with -i (otherwise it is
// discarded). A client's end of input does not close the container's
// stdin: another attach may follow, as docker keeps a detached
// container's stdin open.

// attachDir holds the helpers' sockets: under /run (short paths, gone at
// reboot with the containers they served).
var attachDir = "/run/lodge/attach"

func attachSock(id string) string { return filepath.Join(attachDir, id+".sock") }

// Frame kinds, the first byte of a frame; a 4-byte big-endian length and
// the payload follow. The helper sends the first three, a client the
// other two.
const (
	attachStdout byte = 1
	attachStderr byte = 2
	attachExit   byte = 3 // payload: the exit code, 4 bytes big-endian
	attachInput  byte = 4 // what the client's user typed
	attachResize byte = 5 // the client's terminal: columns and rows, 2 bytes each, big-endian
	attachReady  byte = 6 // the helper's first frame: from now on the client gets every output
)

// attachQueue is how many frames an attached client may fall behind the
// container's output before the helper lets it go: a slow terminal never
// holds the container's output or its log up.
const attachQueue = 1024

func frame(kind byte, p []byte) []byte {
	b := make([]byte, 5+len(p))
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:5], uint32(len(p)))
	copy(b[5:], p)
	return b
}

// readFrame reads one frame; payloads above 1 MiB are refused (the helper
// sends what one read of a pipe returned, at most 64 KiB).
func readFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("attach: a frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return h[0], p, nil
}

// attachHub is the helper's side: the attached clients and the
// container's stdin.
type attachHub struct {
	mu      sync.Mutex
	clients map[*attachClient]bool
	ended   bool

	inMu   sync.Mutex              // guards stdin and resize, never held while writing to stdin
	stdin  io.Writer               // nil: the container has no stdin to give, or closed it
	resize func(cols, rows uint16) // nil: the container has no terminal
	// typed is what clients typed, in order, for the one writer to stdin:
	// a container that does not read its input holds up only that
	// writer (and, once input is full, the clients typing), never a
	// resize.
	typed chan []byte
}

type attachClient struct {
	conn net.Conn
	out  chan []byte // frames to send; closed when the client is let go
}

func newAttachHub(stdin io.Writer) *attachHub {
	h := &attachHub{clients: map[*attachClient]bool{}, stdin: stdin, typed: make(chan []byte, 16)}
	go h.writeInput()
	return h
}

// writeInput gives the container, in order, what clients typed, for the
// hub's life (the helper's).
func (h *attachHub) writeInput() {
	for p := range h.typed {
		h.inMu.Lock()
		w := h.stdin
		h.inMu.Unlock()
		if w == nil {
			continue
		}
		if _, err := w.Write(p); err != nil {
			h.inMu.Lock()
			if h.stdin == w {
				h.stdin = nil // the container closed its stdin
			}
			h.inMu.Unlock()
		}
	}
}

// serve accepts clients on l until it is closed.
func (h *attachHub) serve(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		c := &attachClient{conn: conn, out: make(chan []byte, attachQueue)}
		h.mu.Lock()
		if h.ended {
			h.mu.Unlock()
			conn.Close()
			continue
		}
		h.clients[c] = true
		c.out <- frame(attachReady, nil)
		h.mu.Unlock()
		go func() {
			for f := range c.out {
				if _, err := conn.Write(f); err != nil {
					h.drop(c) // gone: nothing more is queued for it
					break
				}
			}
			conn.Close()
		}()
		go h.input(c)
	}
}

// drop lets c go, if it is still attached.
func (h *attachHub) drop(c *attachClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.clients[c] {
		delete(h.clients, c)
		close(c.out)
	}
}

// input gives the container what c sends (its input, its terminal's
// size), until c hangs up.
func (h *attachHub) input(c *attachClient) {
	for {
		kind, p, err := readFrame(c.conn)
		if err != nil {
			return
		}
		h.inMu.Lock()
		resize := h.resize
		h.inMu.Unlock()
		switch {
		case kind == attachInput:
			h.typed <- p
		case kind == attachResize && resize != nil && len(p) == 4:
			resize(binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]))
		}
	}
}

// setTerminal makes master, the container's terminal, what clients type
// into (where input) and resize.
func (h *attachHub) setTerminal(master *os.File, input bool) {
	h.inMu.Lock()
	defer h.inMu.Unlock()
	if input {
		h.stdin = master
	}
	h.resize = func(cols, rows uint16) {
		unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: cols, Row: rows})
	}
}

// send queues f for every client, letting go of one that is attachQueue
// frames behind.
func (h *attachHub) send(f []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.out <- f:
		default: // attachQueue frames behind
			delete(h.clients, c)
			close(c.out)
		}
	}
}

// end sends the exit code to every client and lets them go; later
// clients are refused.
func (h *attachHub) end(code int) {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(int32(code)))
	h.send(frame(attachExit, p[:]))
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = true
	for c := range h.clients {
		delete(h.clients, c)
		close(c.out)
	}
}

// stream is an io.Writer of one of the container's streams to the hub.
func (h *attachHub) stream(kind byte) io.Writer { return hubStream{h, kind} }

type hubStream struct {
	h    *attachHub
	kind byte
}

func (s hubStream) Write(p []byte) (int, error) {
	s.h.send(frame(s.kind, p))
	return len(p), nil
}

// listenAttach makes id's attach socket, reachable by root alone.
func listenAttach(id string) (net.Listener, error) {
	if err := os.MkdirAll(attachDir, 0o700); err != nil {
		return nil, err
	}
	path := attachSock(id)
	os.Remove(path) // a helper that died before this one left it
	return net.Listen("unix", path)
}

// consoleListener listens on a console socket for id's terminal and
// returns the listener as a file for the log helper, and its path.
func consoleListener(id string) (*os.File, string, error) {
	if err := os.MkdirAll(attachDir, 0o700); err != nil {
		return nil, "", err
	}
	path := filepath.Join(attachDir, id+".console")
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, "", err
	}
	l.SetUnlinkOnClose(false) // the path is the caller's to remove once the runtime has used it
	defer l.Close()
	f, err := l.File()
	if err != nil {
		os.Remove(path)
		return nil, "", err
	}
	return f, path, nil
}

type attachOpts struct {
	noStdin, sigProxy bool
}

func addAttachCommand(root *cobra.Command, a *app) {
	var o attachOpts
	attach := &cobra.Command{
		Use:   "attach [--no-stdin] [--sig-proxy=false] CONTAINER",
		Short: "attach this terminal to a detached container's output (and its stdin, where it was run with -i)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := findCtr(args[0])
			if err != nil {
				return err
			}
			return a.attach(cmd, r, o, false)
		},
	}
	attach.Flags().BoolVar(&o.noStdin, "no-stdin", false, "do not send this terminal's input to the container")
	attach.Flags().BoolVar(&o.sigProxy, "sig-proxy", true, "pass the signals this command gets on to the container")
	root.AddCommand(attach)
}

// attach streams r's output to the command's stdout and stderr until the
// container ends, and returns its exit code as docker attach does. With a
// terminal, the user's own is made raw and its size follows, and ^P ^Q
// detaches, leaving the container running. With start (`start -a`), r is
// a created container, started once the helper has taken this client, so
// that none of its output is missed.
func (a *app) attach(cmd *cobra.Command, r *ctrRecord, o attachOpts, start bool) error {
	if !r.Detached {
		return fmt.Errorf("container %s was not run with -d: its streams are those of the lodge run that started it", r.Name)
	}
	switch st, running := r.status(); {
	case start && st != "created":
		return fmt.Errorf("container %s is %s, not created", r.Name, st)
	case !start && !running:
		return fmt.Errorf("container %s is %s: only a running container can be attached", r.Name, st)
	}
	conn, err := net.Dial("unix", attachSock(r.ID))
	if err != nil {
		return fmt.Errorf("container %s: its log helper does not answer (%w)", r.Name, err)
	}
	defer conn.Close()
	if kind, _, err := readFrame(conn); err != nil || kind != attachReady {
		return fmt.Errorf("container %s: its log helper did not take the attach (%v)", r.Name, err)
	}
	if start {
		if err := a.startCtr(cmd.Context(), r, false); err != nil {
			return err
		}
	}
	var wmu sync.Mutex
	send := func(kind byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := conn.Write(frame(kind, p))
		return err
	}
	input := r.Interactive && !o.noStdin
	if in := a.env.In; in != nil && r.Tty && term.IsTerminal(int(in.Fd())) {
		if input {
			if st, err := term.MakeRaw(int(in.Fd())); err == nil {
				defer term.Restore(int(in.Fd()), st)
			}
		}
		size := func() {
			if w, h, err := term.GetSize(int(in.Fd())); err == nil {
				var p [4]byte
				binary.BigEndian.PutUint16(p[:], uint16(w))
				binary.BigEndian.PutUint16(p[2:], uint16(h))
				send(attachResize, p[:])
			}
		}
		size()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, unix.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				size()
			}
		}()
	}
	detached := make(chan struct{})
	if input {
		go func() {
			var keys *detachKeys
			if r.Tty {
				keys = &detachKeys{}
			}
			buf := make([]byte, 32<<10)
			for {
				n, err := a.env.In.Read(buf)
				p, detach := buf[:n], false
				if keys != nil {
					p, detach = keys.scan(p)
				}
				if len(p) > 0 && send(attachInput, p) != nil {
					return
				}
				if detach {
					close(detached)
					conn.Close()
					return
				}
				if err != nil {
					conn.(*net.UnixConn).CloseWrite()
					return
				}
			}
		}()
	}
	if o.sigProxy && !r.Tty { // with a terminal, ^C is a byte the container's terminal reads
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
		defer signal.Stop(sigs)
		go func() {
			for s := range sigs {
				if err := runtimeOp(a, "kill", r.ID, unix.SignalName(s.(syscall.Signal))); err != nil {
					a.log.Warn("pass a signal on to the container", "signal", s, "err", err)
				}
			}
		}()
	}
	for {
		kind, p, err := readFrame(conn)
		if err != nil {
			select {
			case <-detached:
				fmt.Fprintln(cmd.ErrOrStderr(), "read escape sequence")
				return nil
			default:
			}
			if cur, lerr := loadCtr(r.ID); lerr == nil && cur.ExitCode != nil {
				return exitError{code: *cur.ExitCode} // it ended while its last frames were lost
			}
			if _, running := r.status(); !running {
				return fmt.Errorf("container %s ended; its exit code did not reach this attach (lodge ps -a, lodge wait)", r.Name)
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("container %s: the attach was let go while the container runs (this terminal fell %d writes behind its output)", r.Name, attachQueue)
			}
			return fmt.Errorf("container %s: attach: %w", r.Name, err)
		}
		switch kind {
		case attachStdout:
			cmd.OutOrStdout().Write(p)
		case attachStderr:
			cmd.ErrOrStderr().Write(p)
		case attachExit:
			if len(p) == 4 {
				if code := int(int32(binary.BigEndian.Uint32(p))); code != 0 {
					return exitError{code: code}
				}
			}
			return nil
		}
	}
}

// detachKeys finds docker's detach sequence, ^P ^Q, in what a user types
// into an attached terminal; a ^P followed by anything else is sent with
// it.
type detachKeys struct{ pending bool }

// scan returns what of p to send and whether p ended the sequence (what
// came before it in p is in what to send).
func (d *detachKeys) scan(p []byte) ([]byte, bool) {
	const ctrlP, ctrlQ = 0x10, 0x11
	out := make([]byte, 0, len(p)+1)
	for _, b := range p {
		if d.pending {
			d.pending = false
			if b == ctrlQ {
				return out, true
			}
			out = append(out, ctrlP)
		}
		if b == ctrlP {
			d.pending = true
			continue
		}
		out = append(out, b)
	}
	return out, false
}

// receiveTerminal takes the one connection console (a listening socket)
// gets, from the runtime as runc's --console-socket has it, and returns
// the terminal master it carries.
func receiveTerminal(console *os.File) (*os.File, error) {
	fl, err := net.FileListener(console)
	console.Close()
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	c, err := fl.Accept()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := c.(*net.UnixConn).ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("console socket: no terminal in the message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("console socket: want one descriptor (%v)", err)
	}
	return os.NewFile(uintptr(fds[0]), "terminal"), nil
}
