package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// A watch (lodge watch, the sandbox service's file watches) reports what
// changes below a directory of a container, with inotify. The directory
// is found inside the container's own root, through its first process's
// /proc/PID/root (so the container's mounts are crossed as it sees them),
// with openat2(RESOLVE_IN_ROOT): a symlink in the container cannot lead
// the agent out of it. Directories below it (a recursive watch) are opened
// from the watched one without following any symlink, so only the
// directory's own tree is ever watched. inotify watches inodes: once added,
// a watch needs no path.

const (
	// maxWatchedDirs bounds the directories one recursive watch holds.
	maxWatchedDirs = 8192
	watchMask      = unix.IN_CREATE | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DELETE |
		unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
		unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK
)

// watchContainer answers a watch stream: it reads the directory's path,
// answers the status line, then sends events until the host closes the
// stream or the directory goes.
func (cs *containers) watchContainer(st net.Conn, id string, recursive bool, log *slog.Logger) {
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(io.LimitReader(st, transport.MaxWatchPath+1), 64).ReadString('\n')
	st.SetReadDeadline(time.Time{})
	if err != nil {
		log.Warn("watch", "container_id", id, "err", fmt.Errorf("the path: %w", err))
		return
	}
	w, err := cs.openWatch(id, line[:len(line)-1], recursive)
	if err != nil {
		log.Info("watch", "container_id", id, "err", err)
		st.Write([]byte(oneLine(err.Error()) + "\n"))
		return
	}
	defer w.close()
	if _, err := st.Write([]byte(transport.WatchStatusOK + "\n")); err != nil {
		return
	}
	// The host ends the watch by closing its end; nothing else comes on it.
	go func() {
		io.Copy(io.Discard, st)
		w.close()
	}()
	if err := w.run(st); err != nil && !errors.Is(err, os.ErrClosed) {
		log.Info("watch", "container_id", id, "err", err)
	}
}

// openWatch watches dir, an absolute path in container id's root.
func (cs *containers) openWatch(id, dir string, recursive bool) (*watcher, error) {
	pid, err := cs.firstPid(id)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenFile(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("container %s: its root: %w", id, err)
	}
	defer root.Close()
	return newWatcher(root, dir, recursive)
}

// watcher is one inotify instance and the directories it watches.
type watcher struct {
	in        *os.File // the inotify instance (non-blocking: Close ends a Read)
	root      *os.File // the root dir is found in (O_PATH)
	dir       string   // the watched directory, in root
	topWd     int
	recursive bool
	dirs      map[int]string         // watch descriptor -> name below top
	queue     []transport.WatchEvent // events made by the watcher itself
}

// newWatcher watches dir, resolved inside root as if root were "/".
func newWatcher(root *os.File, dir string, recursive bool) (*watcher, error) {
	if !path.IsAbs(dir) || bytes.IndexByte([]byte(dir), 0) >= 0 || len(dir) > transport.MaxWatchPath {
		return nil, fmt.Errorf("watch %q: not an absolute path", dir)
	}
	rfd, err := unix.Openat(int(root.Fd()), ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	w := &watcher{root: os.NewFile(uintptr(rfd), "root"), dir: dir, recursive: recursive, dirs: map[int]string{}}
	top, err := w.openTop()
	if err != nil {
		w.root.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	defer top.Close()
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		w.root.Close()
		return nil, fmt.Errorf("watch %s: inotify: %w", dir, err)
	}
	w.in = os.NewFile(uintptr(in), "inotify")
	if w.topWd, err = w.add(top, ""); err != nil {
		w.close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	if recursive {
		if err := w.addTree("", false); err != nil {
			w.close()
			return nil, fmt.Errorf("watch %s: %w", dir, err)
		}
	}
	return w, nil
}

func (w *watcher) close() {
	w.in.Close()
	w.root.Close()
}

// openTop opens the watched directory (O_PATH). It is not held open
// between uses: a descriptor of it would keep its inode, and so its
// removal's event, from going.
func (w *watcher) openTop() (*os.File, error) {
	fd, err := unix.Openat2(int(w.root.Fd()), w.dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), w.dir), nil
}

// add watches the directory f, named name below the top.
func (w *watcher) add(f *os.File, name string) (int, error) {
	wd, err := unix.InotifyAddWatch(int(w.in.Fd()), "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), watchMask)
	if err != nil {
		return 0, err
	}
	w.dirs[wd] = name
	return wd, nil
}

// addTree watches the directories below name (itself too, but for the
// top). With announce, what it finds is queued as created: it came
// before its directory was watched.
func (w *watcher) addTree(name string, announce bool) error {
	top, err := w.openTop()
	if err != nil {
		return err
	}
	defer top.Close()
	pending := []string{name}
	for len(pending) > 0 {
		d := pending[0]
		pending = pending[1:]
		rel := d
		if rel == "" {
			rel = "."
		}
		fd, err := unix.Openat2(int(top.Fd()), rel, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			continue // gone, or moved, meanwhile: its parent's events tell
		}
		f := os.NewFile(uintptr(fd), d)
		if d != "" {
			if len(w.dirs) >= maxWatchedDirs {
				f.Close()
				w.queue = append(w.queue, transport.WatchEvent{Type: "overflow", Name: d, Dir: true})
				if name == "" {
					return fmt.Errorf("more than %d directories to watch", maxWatchedDirs)
				}
				continue
			}
			if _, err := w.add(f, d); err != nil {
				f.Close()
				continue
			}
		}
		ents, _ := f.ReadDir(-1)
		f.Close()
		for _, e := range ents {
			child := path.Join(d, e.Name())
			if announce {
				w.queue = append(w.queue, transport.WatchEvent{Type: "create", Name: child, Dir: e.IsDir()})
			}
			if e.IsDir() {
				pending = append(pending, child)
			}
		}
	}
	return nil
}

// run sends events to out, a JSON object a line, until the inotify
// instance is closed (os.ErrClosed) or the watched directory goes (nil).
func (w *watcher) run(out io.Writer) error {
	bw := bufio.NewWriter(out)
	enc := json.NewEncoder(bw)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.in.Read(buf)
		if err != nil {
			return err
		}
		done := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := off + unix.SizeofInotifyEvent + int(ev.Len)
			if end > n {
				break
			}
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:end], "\x00"))
			off = end
			if w.handle(int(ev.Wd), ev.Mask, name) {
				done = true
			}
			for _, e := range w.queue {
				if err := enc.Encode(e); err != nil {
					return err
				}
			}
			w.queue = w.queue[:0]
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// handle queues what one inotify event says, and reports whether the
// watched directory is gone.
func (w *watcher) handle(wd int, mask uint32, name string) bool {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.queue = append(w.queue, transport.WatchEvent{Type: "overflow"})
		return false
	}
	dir, ok := w.dirs[wd]
	if !ok {
		return false
	}
	if mask&unix.IN_IGNORED != 0 {
		delete(w.dirs, wd)
		return wd == w.topWd
	}
	isDir := mask&unix.IN_ISDIR != 0
	rel := path.Join(dir, name)
	event := func(t string) { w.queue = append(w.queue, transport.WatchEvent{Type: t, Name: rel, Dir: isDir}) }
	switch {
	case mask&unix.IN_CREATE != 0:
		event("create")
		if isDir && w.recursive {
			w.addTree(rel, true)
		}
	case mask&unix.IN_MOVED_TO != 0:
		event("create")
		if isDir && w.recursive {
			// Its directories keep their watches: adding them again
			// gives each its new name.
			w.addTree(rel, false)
		}
	case mask&unix.IN_MODIFY != 0:
		event("write")
	case mask&unix.IN_ATTRIB != 0:
		event("chmod")
	case mask&unix.IN_DELETE != 0:
		event("remove")
	case mask&unix.IN_MOVED_FROM != 0:
		event("rename")
	case wd == w.topWd && mask&unix.IN_DELETE_SELF != 0:
		w.queue = append(w.queue, transport.WatchEvent{Type: "remove", Dir: true})
	case wd == w.topWd && mask&unix.IN_MOVE_SELF != 0:
		// Its path names it no more: the watch ends.
		w.queue = append(w.queue, transport.WatchEvent{Type: "rename", Dir: true})
		return true
	}
	return false
}
