// Package pool keeps restored clones of a template ready to hand out
// ([template] pool = N): each is kept by a process of its own (a keeper),
// so no daemon is needed, and handed to the next sandbox of its template
// over a unix socket, with the descriptors it needs (the agent's parked
// channel, the share's mount namespace, the NIC's tap).
//
// Layout below Dir, per template key:
//
//	<key>/slot-<i>.lock  held by a keeper while it fills or offers a clone
//	                     (i < Size: at most Size clones are pooled)
//	<key>/vm-<id>/       one clone's directory, made by its keeper:
//	    alive            held by the keeper for as long as it lives
//	    claim            held by a claimant while it takes the clone
//	    keeper.sock      the keeper's listener, while the clone is offered
//	    ready            exists while the clone is offered
//	    keeper.log       the keeper's log
//	    keeper.pid       the keeper's process id
//	    sandbox/         the VM's state directory (sockets, console, share)
//	<key>/.new-<id>/     a clone's directory while its keeper makes it
//	<key>/last-error     why the last keeper of key failed
//
// A directory whose alive lock nobody holds is a dead keeper's (Sweep):
// its QEMU died with it (Pdeathsig) and its share's namespace with its
// thread, so removing the directory is all that is left to do. Keepers
// sweep when they take a slot and when they offer their clone; a claimant
// sweeps an offered clone whose keeper does not answer.
package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/unixsock"
)

// Files of a clone's directory.
const (
	aliveFile   = "alive"
	claimFile   = "claim"
	socketFile  = "keeper.sock"
	readyFile   = "ready"
	LogFile     = "keeper.log"
	PIDFile     = "keeper.pid"
	SandboxDir  = "sandbox"
	lastErrFile = "last-error"
)

// ErrFull reports a pool whose every slot is taken.
var ErrFull = errors.New("the pool is full")

// Pool is where pooled clones are kept.
type Pool struct {
	Dir  string
	Size int // clones kept per template
}

func (p *Pool) keyDir(key string) (string, error) {
	if key == "" || strings.ContainsAny(key, "/.") {
		return "", fmt.Errorf("pool: invalid template key %q", key)
	}
	return filepath.Join(p.Dir, key), nil
}

// Offer is what a keeper tells its claimant about the clone.
type Offer struct {
	KeeperPID int       `json:"keeper_pid"`
	VMPID     int       `json:"vm_pid"`
	StateDir  string    `json:"state_dir"` // the VM's (QEMU's sockets, console log)
	ShareDir  string    `json:"share_dir"`
	Started   time.Time `json:"started"`
}

// The descriptors handed over with an Offer, in this order.
const (
	FileAgent   = iota // the agent's channel, its agent parked
	FileShareNS        // the share's mount namespace
	FileTap            // the NIC's tap queue
	nFiles
)

// Slot is a keeper's place in the pool.
type Slot struct {
	Dir string // the clone's directory
	// OnReady, if set, runs once the clone is offered (a keeper starts the
	// keeper of the pool's next free slot there: a pool fills one clone
	// after another up to its size).
	OnReady func()

	key  string
	keyD string

	slot  func() // releases the slot lock
	alive func() // releases the alive lock
}

// Take gives a keeper a free slot of key's pool and makes its clone's
// directory; ErrFull when every slot is held.
func (p *Pool) Take(key string) (*Slot, error) {
	kd, err := p.keyDir(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(kd, 0o700); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	p.Sweep(key)
	var release func()
	for pass := 0; pass < 2 && release == nil; pass++ {
		if pass > 0 {
			// Free (and so Status, `lodge template ls`) probes each free
			// slot by taking its lock for a moment: a keeper that met
			// those probes on every free slot looks again before it says
			// the pool is full, or a pool's filling chain stops short.
			time.Sleep(5 * time.Millisecond)
		}
		for i := 0; i < p.Size && release == nil; i++ {
			release, _ = filelock.Lock(context.Background(), filepath.Join(kd, "slot-"+strconv.Itoa(i)+".lock"), false)
		}
	}
	if release == nil {
		return nil, ErrFull
	}
	b := make([]byte, 6)
	rand.Read(b)
	// Made under another name and renamed once its alive lock is held, so
	// that no sweep sees it without one.
	dir := filepath.Join(kd, "vm-"+hex.EncodeToString(b))
	tmp := filepath.Join(kd, ".new-"+hex.EncodeToString(b))
	if err := os.Mkdir(tmp, 0o700); err != nil {
		release()
		return nil, fmt.Errorf("pool: %w", err)
	}
	alive, err := filelock.Lock(context.Background(), filepath.Join(tmp, aliveFile), false)
	if err == nil {
		if err = os.Rename(tmp, dir); err != nil {
			alive()
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		release()
		return nil, fmt.Errorf("pool: %w", err)
	}
	os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	return &Slot{Dir: dir, key: key, keyD: kd, slot: release, alive: alive}, nil
}

// Fail records why the keeper failed, for whoever wonders why the pool is
// empty (`lodge template ls`, the claimant's log).
func (s *Slot) Fail(err error) { failed(s.keyD, err) }

// Fail records why a keeper of key failed before it had a slot.
func (p *Pool) Fail(key string, err error) {
	if kd, kerr := p.keyDir(key); kerr == nil && os.MkdirAll(kd, 0o700) == nil {
		failed(kd, err)
	}
}

func failed(keyDir string, err error) {
	os.WriteFile(filepath.Join(keyDir, lastErrFile), []byte(time.Now().UTC().Format(time.RFC3339)+" "+err.Error()+"\n"), 0o600)
}

// Close removes the clone's directory and releases the slot; the clone
// must be gone.
func (s *Slot) Close() {
	os.RemoveAll(s.Dir)
	s.alive()
	s.slot()
}

// request is what a claimant (or a drain) asks a keeper.
type request struct {
	Op string `json:"op"` // "claim" or "drain"
}

// Claimant is the process that took a clone.
type Claimant struct {
	PID   int
	pidfd int
}

// Gone is closed when the claimant has exited.
func (c *Claimant) Gone() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		fds := []unix.PollFd{{Fd: int32(c.pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	return ch
}

// Close releases the claimant's descriptor.
func (c *Claimant) Close() { unix.Close(c.pidfd) }

// ErrDrained reports a clone that was asked to go instead of being
// claimed (its template is being removed).
var ErrDrained = errors.New("pool: the clone was drained")

// Offer offers the clone until a claimant takes it (returned once it said
// it has adopted it), it is drained, the VM dies (gone) or ctx ends. files
// are handed over in the order of FileAgent..FileTap.
func (s *Slot) Offer(ctx context.Context, o Offer, files []*os.File, gone <-chan struct{}) (*Claimant, error) {
	if len(files) != nFiles {
		return nil, fmt.Errorf("pool: %d descriptors to hand over, want %d", len(files), nFiles)
	}
	sock := filepath.Join(s.Dir, socketFile)
	ln, err := unixsock.Listen(sock)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	defer os.Remove(sock)
	defer ln.Close()
	// Take swept the dead keepers' directories; one whose keeper was
	// still dying then is swept now, before this clone is seen offered.
	sweep(s.keyD)
	ready := filepath.Join(s.Dir, readyFile)
	if err := os.WriteFile(ready, nil, 0o600); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	defer os.Remove(ready)
	os.Remove(filepath.Join(s.keyD, lastErrFile)) // the pool works again
	if s.OnReady != nil {
		s.OnReady()
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-gone:
		}
		ln.Close()
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			select {
			case <-gone:
				return nil, errors.New("pool: the VM exited while it was offered")
			default:
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("pool: %w", err)
		}
		cl, err := s.serve(c, o, files)
		c.Close()
		if err == nil || errors.Is(err, ErrDrained) {
			return cl, err
		}
		// A claimant that failed before it adopted the clone: whatever it
		// did to the VM, the clone cannot be offered again.
		if cl != nil {
			cl.Close()
			return nil, err
		}
	}
}

// serve answers one connection; a nil Claimant with an error means the
// connection was not a claim and the clone is still offered.
func (s *Slot) serve(c *net.UnixConn, o Offer, files []*os.File) (*Claimant, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil || cred.Uid != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("pool: a connection from another user refused")
	}
	var req request
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		return nil, fmt.Errorf("pool: bad request: %w", err)
	}
	switch req.Op {
	case "drain":
		c.Write([]byte("ok\n"))
		return nil, ErrDrained
	case "claim":
	default:
		return nil, fmt.Errorf("pool: unknown request %q", req.Op)
	}
	pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		return nil, fmt.Errorf("pool: the claimant: %w", err)
	}
	cl := &Claimant{PID: int(cred.Pid), pidfd: pidfd}
	// From here the clone is the claimant's, or no one's: it is no longer
	// pooled, and its slot is free for the next one (which the claimant
	// has a keeper fill once it has the clone).
	os.Remove(filepath.Join(s.Dir, readyFile))
	s.slot()
	s.slot = func() {}
	msg, _ := json.Marshal(o)
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if _, _, err := c.WriteMsgUnix(msg, unix.UnixRights(fds...), nil); err != nil {
		return cl, fmt.Errorf("pool: hand over: %w", err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	ack := make([]byte, 3)
	if n, err := c.Read(ack); err != nil || string(ack[:n]) != "ok\n" {
		return cl, fmt.Errorf("pool: the claimant did not adopt the clone (%v)", err)
	}
	return cl, nil
}

// Handoff is a claimed clone, until the claimant accepts or refuses it.
type Handoff struct {
	Offer Offer
	Files []*os.File // FileAgent..FileTap
	conn  *net.UnixConn
	claim func()
}

// Accept tells the keeper the clone is adopted; from then on the keeper
// ends the VM when the claimant exits.
func (h *Handoff) Accept() error {
	_, err := h.conn.Write([]byte("ok\n"))
	h.close()
	if err != nil {
		return fmt.Errorf("pool: the keeper: %w", err)
	}
	return nil
}

// Refuse gives the clone up: its keeper ends the VM.
func (h *Handoff) Refuse() {
	h.close()
	for _, f := range h.Files {
		f.Close()
	}
}

func (h *Handoff) close() {
	h.conn.Close()
	h.claim()
}

// Claim takes a ready clone of key from the pool: nil without an error when
// there is none.
func (p *Pool) Claim(ctx context.Context, key string) (*Handoff, error) {
	kd, err := p.keyDir(key)
	if err != nil {
		return nil, err
	}
	ready, _ := filepath.Glob(filepath.Join(kd, "vm-*", readyFile))
	var errs []error
	for _, r := range ready {
		dir := filepath.Dir(r)
		unlock, err := filelock.Lock(ctx, filepath.Join(dir, claimFile), false)
		if err != nil {
			continue // someone else is taking it
		}
		h, err := claim(ctx, dir)
		if h == nil {
			unlock()
			if err != nil {
				errs = append(errs, err)
			} else {
				// A killed keeper's (nobody else may sweep it soon). Its
				// QEMU may have died before the keeper's last thread let
				// go of its locks: give it a moment, so that its slot is
				// free when the caller looks for one to refill.
				removeIfDeadWithin(ctx, dir, deadKeeperWait)
			}
			continue
		}
		h.claim = unlock
		return h, nil
	}
	return nil, errors.Join(errs...)
}

func claim(ctx context.Context, dir string) (*Handoff, error) {
	nc, err := unixsock.Dial(ctx, filepath.Join(dir, socketFile))
	if err != nil {
		return nil, nil //nolint:nilerr // the keeper is gone or busy: not an error of ours
	}
	c := nc.(*net.UnixConn)
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	json.NewEncoder(c).Encode(request{Op: "claim"})
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*nFiles))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil || n == 0 {
		c.Close()
		return nil, fmt.Errorf("pool: %s: no offer (%v)", dir, err)
	}
	files, ferr := parseRights(oob[:oobn])
	h := &Handoff{Files: files, conn: c}
	if ferr == nil && len(files) != nFiles {
		ferr = fmt.Errorf("%d descriptors, want %d", len(files), nFiles)
	}
	if ferr == nil {
		ferr = json.Unmarshal(buf[:n], &h.Offer)
	}
	if ferr != nil {
		h.claim = func() {}
		h.Refuse()
		return nil, fmt.Errorf("pool: %s: bad offer: %w", dir, ferr)
	}
	c.SetDeadline(time.Time{})
	return h, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "pooled"))
		}
	}
	return files, nil
}

// Sweep removes the directories of key's dead keepers.
func (p *Pool) Sweep(key string) {
	kd, err := p.keyDir(key)
	if err != nil {
		return
	}
	sweep(kd)
}

func sweep(keyDir string) {
	dirs, _ := filepath.Glob(filepath.Join(keyDir, "vm-*"))
	for _, d := range dirs {
		removeIfDead(d)
	}
	// One a keeper was killed making (Take): any that is not new.
	made, _ := filepath.Glob(filepath.Join(keyDir, ".new-*"))
	for _, d := range made {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > time.Minute {
			removeIfDead(d)
		}
	}
}

// removeIfDead removes a clone's directory if its keeper is dead.
func removeIfDead(dir string) { removeIfDeadWithin(context.Background(), dir, 0) }

// deadKeeperWait bounds how long a claimant waits for a keeper that did
// not answer to let go of its locks.
const deadKeeperWait = 2 * time.Second

// removeIfDeadWithin removes a clone's directory once its keeper is dead,
// waiting at most d (and ctx) for it to be.
func removeIfDeadWithin(ctx context.Context, dir string, d time.Duration) {
	wait := d > 0
	if wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(dir, aliveFile), wait)
	if err != nil {
		return // its keeper lives
	}
	os.RemoveAll(dir)
	unlock()
}

// Free counts key's slots that no keeper holds.
func (p *Pool) Free(key string) int {
	kd, err := p.keyDir(key)
	if err != nil {
		return 0
	}
	n := 0
	for i := 0; i < p.Size; i++ {
		unlock, err := filelock.Lock(context.Background(), filepath.Join(kd, "slot-"+strconv.Itoa(i)+".lock"), false)
		if err == nil {
			unlock()
		}
		if err == nil || errors.Is(err, os.ErrNotExist) { // no keeper ever made key's directory
			n++
		}
	}
	return n
}

// Status describes key's pool for `lodge template ls`.
type Status struct {
	Ready, Filling int
	LastError      string
}

// Status counts key's ready and filling clones.
func (p *Pool) Status(key string) Status {
	var st Status
	kd, err := p.keyDir(key)
	if err != nil {
		return st
	}
	p.Sweep(key)
	st.Ready = len(must(filepath.Glob(filepath.Join(kd, "vm-*", readyFile))))
	st.Filling = p.Size - p.Free(key) - st.Ready
	if st.Filling < 0 {
		st.Filling = 0
	}
	if b, err := os.ReadFile(filepath.Join(kd, lastErrFile)); err == nil {
		st.LastError = strings.TrimSpace(string(b))
	}
	return st
}

func must(s []string, _ error) []string { return s }

// Drain asks every offered clone of key to end, and waits (bounded by ctx)
// until no keeper of key is left offering or filling; a clone already
// handed out is its sandbox's, not the pool's.
func (p *Pool) Drain(ctx context.Context, key string) {
	kd, err := p.keyDir(key)
	if err != nil {
		return
	}
	if _, err := os.Stat(kd); err != nil {
		return // no keeper ever made key's directory
	}
	// Each slot that comes free stays held here until the pool is empty,
	// so that no keeper (one a drained keeper started for the next slot,
	// say) takes it meanwhile.
	held := map[int]func(){}
	defer func() {
		for _, release := range held {
			release()
		}
		p.Sweep(key)
	}()
	for {
		for i := 0; i < p.Size; i++ {
			if held[i] != nil {
				continue
			}
			if release, err := filelock.Lock(context.Background(), filepath.Join(kd, "slot-"+strconv.Itoa(i)+".lock"), false); err == nil {
				held[i] = release
			}
		}
		if len(held) == p.Size || ctx.Err() != nil {
			return
		}
		socks, _ := filepath.Glob(filepath.Join(kd, "vm-*", socketFile))
		for _, s := range socks {
			c, err := unixsock.Dial(ctx, s)
			if err != nil {
				continue
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			json.NewEncoder(c).Encode(request{Op: "drain"})
			c.Read(make([]byte, 3))
			c.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
