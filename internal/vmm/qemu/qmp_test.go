package qemu

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeQEMU answers QMP on one end of a pipe with canned lines per command.
func fakeQEMU(t *testing.T, conn net.Conn, replies map[string][]string) {
	t.Helper()
	go func() {
		defer conn.Close()
		conn.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}}, "capabilities": []}}` + "\n"))
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			for cmd, lines := range replies {
				if strings.Contains(sc.Text(), `"`+cmd+`"`) {
					for _, l := range lines {
						conn.Write([]byte(l + "\n"))
					}
				}
			}
		}
	}()
}

func TestQMP(t *testing.T) {
	t.Parallel()
	host, qemu := net.Pipe()
	fakeQEMU(t, qemu, map[string][]string{
		"qmp_capabilities": {`{"return": {}}`},
		"query-status": {
			`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}`,
			`{"return": {"status": "running", "singlestep": false, "running": true}}`,
		},
		"migrate": {`{"error": {"class": "GenericError", "desc": "no migration"}}`},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := ConnectQMP(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	st, err := q.QueryStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Fatalf("status = %+v, want running", st)
	}
	err = q.Execute(ctx, "migrate", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Fatalf("migrate error = %v, want a GenericError QMPError", err)
	}
}

func TestQMPTimeout(t *testing.T) {
	t.Parallel()
	host, qemu := net.Pipe()
	defer qemu.Close()
	go func() { // greets, then never answers
		qemu.Write([]byte(`{"QMP": {}}` + "\n"))
		buf := make([]byte, 4096)
		for {
			if _, err := qemu.Read(buf); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := ConnectQMP(ctx, host); err == nil {
		t.Fatal("ConnectQMP succeeded against a silent QEMU")
	}
}

func TestDecodeQMPRejects(t *testing.T) {
	t.Parallel()
	for _, line := range []string{
		``, `[]`, `{}`, `not json`,
		`{"return": {}, "event": "X"}`,
		`{"QMP": {}, "return": 1}`,
	} {
		if _, err := decodeQMP([]byte(line)); !errors.Is(err, ErrQMPProtocol) {
			t.Errorf("decodeQMP(%q) = %v, want ErrQMPProtocol", line, err)
		}
	}
}

// FuzzDecodeQMP: any bytes QEMU (or a guest influencing it) sends must not
// panic the decoder, and an accepted message is exactly one kind.
func FuzzDecodeQMP(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {}}}`, `{"return": {"status": "running"}}`,
		`{"error": {"class": "GenericError", "desc": "x"}}`, `{"event": "SHUTDOWN", "data": {}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := decodeQMP(line)
		if err != nil {
			return
		}
		if m.Error != nil && m.Return != nil {
			t.Fatalf("accepted both error and return: %q", line)
		}
	})
}
