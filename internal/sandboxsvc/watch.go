package sandboxsvc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Watching a sandbox's directory (E2B's files.watchDir): the service runs
// `lodge watch --format json` for each watch, whose agent in the guest
// watches the directory with inotify and whose host side checks what the
// guest sends; the service hands each event on as it comes.

// FileEvent is one change below a watched directory: create, write,
// remove, rename (a move's old name; the new one comes as a create), chmod
// or overflow (events were lost). Name is relative to the directory ("":
// the directory itself, whose removal ends the watch), Path absolute.
type FileEvent struct {
	Type string    `json:"type"`
	Name string    `json:"name"`
	Path string    `json:"path"`
	Dir  bool      `json:"dir,omitempty"`
	Time time.Time `json:"time"`
}

// Watcher is an open watch.
type Watcher interface {
	// Next returns the next event; io.EOF once the watch ended (its
	// directory went, or the sandbox did).
	Next() (FileEvent, error)
	// Close ends the watch.
	Close() error
}

// maxSandboxWatches bounds one sandbox's watches open at once (each is a
// lodge process on the host).
const maxSandboxWatches = 8

// Watch follows what changes below dir in sandbox id (recursive: in the
// directories below it too), handing each event to send, until ctx ends,
// the directory goes or the sandbox ends. ready is called once the watch
// is in place: what changes after it is seen.
func (s *Service) Watch(ctx context.Context, id, dir string, recursive bool, send func(FileEvent) error, ready func()) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	if err := s.awake(ctx, id); err != nil {
		return err
	}
	release, err := s.hold(s.watches, id, maxSandboxWatches,
		fmt.Sprintf("%d watches of sandbox %s open, the most one sandbox may have", maxSandboxWatches, id))
	if err != nil {
		return err
	}
	defer release()
	w, err := s.run.Watch(ctx, id, dir, recursive)
	if err != nil {
		return err
	}
	defer w.Close()
	stop := context.AfterFunc(ctx, func() { w.Close() })
	defer stop()
	ready()
	for {
		e, err := w.Next()
		switch {
		case errors.Is(err, io.EOF) || err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		}
		if err := send(e); err != nil {
			return err
		}
	}
}

// maxWatchEvent bounds one line of lodge watch's output (lodge has
// checked it: a name of at most PATH_MAX bytes).
const maxWatchEvent = 64 << 10

// Watch runs `lodge watch --format json [-r] NAME DIR` and returns once
// the watch is in place (its first line); lodge's refusal is an errFile
// with its words. ctx bounds the start only.
func (l LodgeRunner) Watch(ctx context.Context, name, dir string, recursive bool) (Watcher, error) {
	args := []string{"watch", "--format", "json"}
	if recursive {
		args = append(args, "-r")
	}
	cmd := exec.Command(l.Bin, append(args, "--", name, dir)...)
	stderr := &capped{max: 4096}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lodge watch: %w", err)
	}
	w := &lodgeWatch{cmd: cmd, r: bufio.NewReaderSize(out, maxWatchEvent)}
	first := make(chan error, 1)
	go func() {
		e, err := w.Next()
		if err == nil && e.Type != "watching" {
			err = fmt.Errorf("lodge watch began with a %q event", e.Type)
		}
		first <- err
	}()
	select {
	case err = <-first:
	case <-ctx.Done():
		err = ctx.Err()
		w.Close()
		<-first
	}
	if err != nil {
		w.Close()
		if msg := lastWords(stderr.buf.String()); msg != "" {
			return nil, errFile{msg}
		}
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	return w, nil
}

// lodgeWatch is a watch lodge watch follows.
type lodgeWatch struct {
	cmd    *exec.Cmd
	r      *bufio.Reader
	closed sync.Once
}

func (w *lodgeWatch) Next() (FileEvent, error) {
	line, err := w.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return FileEvent{}, fmt.Errorf("lodge watch: a line longer than %d bytes", maxWatchEvent)
	case errors.Is(err, io.EOF) && len(line) > 0:
		return FileEvent{}, io.ErrUnexpectedEOF
	case err != nil:
		return FileEvent{}, err
	}
	var e FileEvent
	if err := json.Unmarshal(line, &e); err != nil {
		return FileEvent{}, fmt.Errorf("lodge watch: %w", err)
	}
	return e, nil
}

// Close ends lodge watch (SIGTERM, then SIGKILL after 10 s) and waits for
// it.
func (w *lodgeWatch) Close() error {
	w.closed.Do(func() {
		w.cmd.Process.Signal(syscall.SIGTERM)
		t := time.AfterFunc(10*time.Second, func() { w.cmd.Process.Kill() })
		defer t.Stop()
		w.cmd.Wait()
	})
	return nil
}
