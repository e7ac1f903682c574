package runtimecli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/unixsock"
)

// Passing stdio to the supervisor: `exec` connects to fd.sock and sends a
// token with its stdin, stdout and stderr as SCM_RIGHTS; then it names them
// in the task API as "fdpass://TOKEN/N" (N = 0, 1, 2).
//
//	exec CLI                      supervisor
//	connect(fd.sock)  ──────────> accept
//	"TOKEN" + rights[0,1,2] ────> store[TOKEN] (expires after fdTTL)
//	<───────────────────────────  "ok"
//	Exec{stdin: fdpass://TOKEN/0 ...}, Start ──> take(TOKEN)

const (
	fdTTL      = time.Minute
	maxPending = 32
	tokenLen   = 32
)

// fdStore holds passed descriptors until an exec claims them.
type fdStore struct {
	mu      sync.Mutex // guards pending
	pending map[string][]*os.File
}

func newToken() string {
	b := make([]byte, tokenLen/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// serve accepts descriptors on l until it is closed.
func (s *fdStore) serve(l *net.UnixListener) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		go s.receive(c)
	}
}

func (s *fdStore) receive(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, tokenLen)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("passed-%d", i))
	}
	if n != tokenLen || len(files) != 3 || !s.put(string(buf[:n]), files) {
		for _, f := range files {
			f.Close()
		}
		return
	}
	c.Write([]byte("ok"))
}

func (s *fdStore) put(token string, files []*os.File) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) >= maxPending {
		return false
	}
	if _, dup := s.pending[token]; dup {
		return false
	}
	s.pending[token] = files
	// Descriptors nobody claims (an exec whose start failed) are closed
	// after fdTTL, not left for a later pass: a client may wait for the
	// end of a pipe it passed.
	time.AfterFunc(fdTTL, func() {
		if files, err := s.take(token); err == nil {
			for _, f := range files {
				f.Close()
			}
		}
	})
	return true
}

// take returns and forgets the descriptors passed under token.
func (s *fdStore) take(token string) ([]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, ok := s.pending[token]
	if !ok {
		return nil, errors.New("no descriptors passed under that token")
	}
	delete(s.pending, token)
	return files, nil
}

// takeSecond returns the second of the descriptors that dest
// (fdpass://TOKEN/1) names, and closes the others: the one end a stream
// of the supervisor's goes to (what names it in errors).
func (s *fdStore) takeSecond(what, dest string) (*os.File, error) {
	token, ok := strings.CutSuffix(strings.TrimPrefix(dest, schemeFDPass), "/1")
	if !ok || !strings.HasPrefix(dest, schemeFDPass) {
		return nil, fmt.Errorf("%s goes to %q: want %sTOKEN/1", what, dest, schemeFDPass)
	}
	files, err := s.take(token)
	if err != nil {
		return nil, err
	}
	files[0].Close()
	files[2].Close()
	return files[1], nil
}

// passEnd sends f to the supervisor of running container id, as the
// second of three descriptors (the others /dev/null), and returns the
// token naming them: the end of a stream the supervisor opens for us.
func passEnd(root, id string, f *os.File) (string, error) {
	dir := containerDir(root, id)
	if _, err := os.Stat(filepath.Join(dir, taskSock)); err != nil {
		return "", fmt.Errorf("container %s is not running", id)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return "", err
	}
	defer devnull.Close()
	return passFiles(dir, [3]*os.File{devnull, f, devnull})
}

// passStdio sends this process's stdio to the supervisor of the container
// in dir and returns the token naming them.
func passStdio(dir string) (string, error) {
	return passFiles(dir, [3]*os.File{os.Stdin, os.Stdout, os.Stderr})
}

// passFiles sends three descriptors to the supervisor of the container in
// dir and returns the token naming them (fdpass://TOKEN/N).
func passFiles(dir string, files [3]*os.File) (string, error) {
	c, err := unixsock.Dial(context.Background(), filepath.Join(dir, fdSock))
	if err != nil {
		return "", fmt.Errorf("connect to the container's supervisor: %w", err)
	}
	defer c.Close()
	token := newToken()
	rights := unix.UnixRights(int(files[0].Fd()), int(files[1].Fd()), int(files[2].Fd()))
	if _, _, err := c.(*net.UnixConn).WriteMsgUnix([]byte(token), rights, nil); err != nil {
		return "", fmt.Errorf("pass descriptors: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	ack := make([]byte, 2)
	if _, err := c.Read(ack); err != nil || string(ack) != "ok" {
		return "", fmt.Errorf("pass descriptors: supervisor refused them")
	}
	return token, nil
}
