package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxQMPLine bounds one QMP message; QEMU's replies here are small.
const maxQMPLine = 1 << 20

// QMPError is an error reply from QEMU.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// ErrQMPProtocol reports a QMP message that does not follow the protocol.
var ErrQMPProtocol = errors.New("qmp protocol error")

// qmpMessage is any message QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP    *json.RawMessage `json:"QMP"`
	Return json.RawMessage  `json:"return"`
	Error  *QMPError        `json:"error"`
	Event  string           `json:"event"`
}

// decodeQMP parses one line from QEMU.
func decodeQMP(line []byte) (qmpMessage, error) {
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrQMPProtocol, err)
	}
	n := 0
	for _, set := range []bool{m.QMP != nil, m.Return != nil, m.Error != nil, m.Event != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return m, fmt.Errorf("%w: message is not exactly one of greeting, return, error, event", ErrQMPProtocol)
	}
	return m, nil
}

// QMP is a client of QEMU's machine protocol. Commands are serialised.
type QMP struct {
	mu   sync.Mutex // guards conn and r during a command
	conn net.Conn
	r    *bufio.Reader
}

// ConnectQMP reads the greeting on conn and enters command mode.
func ConnectQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	q := &QMP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	q.setDeadline(ctx)
	m, err := q.read()
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if m.QMP == nil {
		return nil, fmt.Errorf("qmp greeting: %w: got %+v", ErrQMPProtocol, m)
	}
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *QMP) setDeadline(ctx context.Context) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Time{}
	}
	q.conn.SetDeadline(d)
}

func (q *QMP) read() (qmpMessage, error) {
	var line []byte
	for {
		chunk, isPrefix, err := q.r.ReadLine()
		if err != nil {
			return qmpMessage{}, err
		}
		line = append(line, chunk...)
		if len(line) > maxQMPLine {
			return qmpMessage{}, fmt.Errorf("%w: message over %d bytes", ErrQMPProtocol, maxQMPLine)
		}
		if !isPrefix {
			break
		}
	}
	return decodeQMP(bytes.TrimSpace(line))
}

// Execute runs one command and decodes its return value into out (if not
// nil). Events that arrive meanwhile are skipped.
func (q *QMP) Execute(ctx context.Context, cmd string, args, out any) error {
	return q.execute(ctx, cmd, args, out, nil)
}

// PassFD hands QEMU an open file under name (QMP getfd: the descriptor
// travels with the command as SCM_RIGHTS), for commands such as migrate
// that take "fd:NAME".
func (q *QMP) PassFD(ctx context.Context, name string, f *os.File) error {
	return q.execute(ctx, "getfd", map[string]any{"fdname": name}, nil, f)
}

func (q *QMP) execute(ctx context.Context, cmd string, args, out any, f *os.File) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.setDeadline(ctx)
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if f != nil {
		uc, ok := q.conn.(*net.UnixConn)
		if !ok {
			return fmt.Errorf("qmp %s: descriptors pass only over a unix socket", cmd)
		}
		_, _, err = uc.WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return fmt.Errorf("qmp %s: %w", cmd, m.Error)
		case m.Return != nil:
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("qmp %s: %w: %v", cmd, ErrQMPProtocol, err)
			}
			return nil
		default:
			return fmt.Errorf("qmp %s: %w: unexpected greeting", cmd, ErrQMPProtocol)
		}
	}
}

// Status is the VM's run state ("running", "paused", "shutdown", ...).
type Status struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// QueryStatus asks QEMU for the run state.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Quit asks QEMU to exit at once.
func (q *QMP) Quit(ctx context.Context) error {
	return q.Execute(ctx, "quit", nil, nil)
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
