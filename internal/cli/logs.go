package cli

// A container's log (docker's json-file lines) and the helper that
// writes it for a detached container and serves its attach socket.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/runtimecli"
)

// logMax is the size at which a container's log is rotated (one old file
// is kept: the log takes at most twice this).
const logMax = 10 << 20

// logLine is one line of a container's log (docker's json-file format).
type logLine struct {
	Log    string    `json:"log"`
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
}

// jsonLog writes a container's output as json lines, rotating the file
// at logMax.
type jsonLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
	size int64
}

func openJSONLog(path string) (*jsonLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	fi, _ := f.Stat()
	return &jsonLog{path: path, f: f, size: fi.Size()}, nil
}

func (l *jsonLog) write(stream string, b []byte) {
	line, _ := json.Marshal(logLine{Log: string(b), Stream: stream, Time: time.Now().UTC()})
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.size+int64(len(line)) > logMax {
		l.f.Close()
		os.Rename(l.path, l.path+".1")
		f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			return
		}
		l.f, l.size = f, 0
	}
	n, _ := l.f.Write(line)
	l.size += int64(n)
}

// copyLines copies r to the log line by line (a long line in pieces).
func (l *jsonLog) copyLines(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			l.write(stream, b)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func readLogLines(path string) []logLine {
	var out []logLine
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 256<<10), 1<<20)
		for sc.Scan() {
			var l logLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				out = append(out, l)
			}
		}
		f.Close()
	}
	return out
}

// logOpts are logs' flags.
type logOpts struct {
	follow, timestamps bool
	tail               string
	since, until       time.Time // zero: no bound
}

// parseLogTime reads --since or --until as docker does: an RFC 3339 time
// (or a date), Unix seconds, or a duration back from now.
func parseLogTime(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("--%s %q: want a time (2026-12-06T10:00:00Z), Unix seconds or a duration (10m)", flag, s)
}

func printLogs(stdout, stderr io.Writer, r *ctrRecord, o logOpts) error {
	follow, tail, timestamps := o.follow, o.tail, o.timestamps
	inRange := func(l logLine) bool {
		return (o.since.IsZero() || !l.Time.Before(o.since)) && (o.until.IsZero() || l.Time.Before(o.until))
	}
	lines := slices.DeleteFunc(readLogLines(logPath(r.ID)), func(l logLine) bool { return !inRange(l) })
	if tail != "all" {
		var n int
		if _, err := fmt.Sscanf(tail, "%d", &n); err != nil || n < 0 {
			return fmt.Errorf("--tail %q: want a number or all", tail)
		}
		if n < len(lines) {
			lines = lines[len(lines)-n:]
		}
	}
	emit := func(l logLine) {
		w := stdout
		if l.Stream == "stderr" {
			w = stderr
		}
		if timestamps {
			fmt.Fprintf(w, "%s %s", l.Time.Format(time.RFC3339Nano), l.Log)
		} else {
			io.WriteString(w, l.Log)
		}
	}
	for _, l := range lines {
		emit(l)
	}
	if !follow {
		return nil
	}
	seen := len(readLogLines(logPath(r.ID)))
	for {
		cur, err := loadCtr(r.ID)
		done := err != nil || cur.ExitCode != nil
		all := readLogLines(logPath(r.ID))
		if len(all) < seen { // rotated
			seen = 0
		}
		for _, l := range all[seen:] {
			if inRange(l) {
				emit(l)
			}
		}
		seen = len(all)
		if done {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runLogger is the helper a detached container's output goes through
// (fds 3 and 4: its stdout and stderr; fd 5 says when the container
// exists): json lines in its log, then, once the container has ended, its
// exit code in its record, its runtime state deleted (the VM is gone), and
// with --rm the container removed.
func runLogger(a *app, id string) error {
	// What lodge handed this helper is its own, not its children's (a
	// restart policy's start makes a supervisor).
	for fd := 3; fd <= 7; fd++ {
		unix.CloseOnExec(fd)
	}
	// The container's monitor lock (restart.go), held until this helper
	// exits or hands it to the next one.
	monitor := os.NewFile(6, "monitor")
	r, err := loadCtr(id)
	if err != nil {
		return err
	}
	jl, err := openJSONLog(logPath(id))
	if err != nil {
		return err
	}
	// The container's stdin, where it was run with -i: attached clients
	// write to it.
	var stdin io.Writer
	if r.Interactive && !r.Tty {
		stdin = os.NewFile(7, "stdin")
	}
	hub := newAttachHub(stdin)
	closeAttach := func() {}
	if l, err := listenAttach(id); err != nil {
		a.log.Warn("attach socket: lodge attach will not reach this container", "container", r.Name, "err", err)
	} else {
		closeAttach = func() {
			l.Close()
			os.Remove(attachSock(id))
		}
		defer closeAttach()
		go hub.serve(l)
	}
	var wg sync.WaitGroup
	for fd, stream := range map[uintptr]string{3: "stdout", 4: "stderr"} {
		f := os.NewFile(fd, stream)
		kind := attachStdout
		if stream == "stderr" {
			kind = attachStderr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			jl.copyLines(stream, io.TeeReader(f, hub.stream(kind)))
		}()
	}
	if r.Tty {
		// The container's terminal: its master comes over the console
		// socket (fd 6) as the runtime makes the container, and is its
		// one output stream.
		wg.Add(1)
		go func() {
			defer wg.Done()
			master, err := receiveTerminal(os.NewFile(7, "console"))
			if err != nil {
				a.log.Warn("the container's terminal", "container", r.Name, "err", err)
				return
			}
			defer master.Close()
			hub.setTerminal(master, r.Interactive)
			jl.copyLines("stdout", io.TeeReader(master, hub.stream(attachStdout)))
		}()
	}
	watchCtx, endWatch := context.WithCancel(a.ctx())
	go a.watchDeadline(watchCtx, id)
	go a.watchHealth(watchCtx, id)
	code, why := awaitEnd(runtimeState, id, os.NewFile(5, "created"))
	endWatch()
	if r2, err := loadCtr(id); err == nil {
		r = r2 // its name, as it is now
	}
	r.emit("die", "exitCode", strconv.Itoa(code))
	finished := time.Now().UTC()
	// Its output is flushed by now, or soon; deleting the runtime state
	// ends the supervisor, which closes the streams.
	flushed := make(chan struct{})
	go func() { wg.Wait(); close(flushed) }()
	select {
	case <-flushed:
	case <-time.After(2 * time.Second):
	}
	runtimeOp(a, "delete", "--force", id)
	select {
	case <-flushed:
	case <-time.After(5 * time.Second):
	}
	hub.end(code)
	closeAttach() // before a restart's helper makes its own
	if err := leaveBridge(a.ctx(), id, r.Network); err != nil {
		a.log.Warn("leave the bridge network", "container", r.Name, "err", err)
	}
	if r.AutoRemove {
		removeAnonymous(r.Volumes, r.ID)
		if _, err := os.Stat(ctrDir(id)); err != nil {
			return nil // removed meanwhile (rm -f), which said so
		}
		r.emit("destroy")
		return os.RemoveAll(ctrDir(id))
	}
	if _, err := os.Stat(ctrDir(id)); err != nil {
		return nil // removed meanwhile (rm -f)
	}
	if _, err := updateCtr(a.ctx(), id, func(c *ctrRecord) {
		c.ExitCode, c.Error, c.FinishedAt = &code, why, finished
	}); err != nil {
		return err
	}
	a.restartOnPolicy(a.ctx(), id, monitor)
	return nil
}

// awaitEnd waits for a detached container to end and returns its exit
// code, or 137 and why there is none. The runtime has no record of the
// container until `lodge run` has made it, so the wait starts when created
// is written to, or closed (lodge failed, and kills this helper, or died):
// from then on a missing record means the container is gone, and the
// helper deletes what is left of it.
func awaitEnd(root, id string, created io.ReadCloser) (int, string) {
	var b [1]byte
	n, _ := created.Read(b[:])
	created.Close()
	for {
		info, err := runtimecli.Inspect(root, id)
		switch {
		case err == nil && info.Status == "stopped" && info.ExitStatus != nil:
			return *info.ExitStatus, ""
		case err == nil && info.Status == "stopped":
			return 137, "the container's VM ended without an exit status"
		case errors.Is(err, runtimecli.ErrNoContainer) && n == 0:
			return 137, "lodge ended before the container was created"
		case err != nil:
			return 137, "the container's runtime state is gone: " + err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
}
