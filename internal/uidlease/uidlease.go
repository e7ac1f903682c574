// Package uidlease hands out host user ids, one per VMM process, from a
// range no other user of the host has: each is held by a lock file in a
// directory while its process lives, and is free again once released or
// once its holder died (the lock dies with the process).
package uidlease

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrExhausted reports a range whose every id is in use.
var ErrExhausted = errors.New("every uid of the range is in use")

// Pool is a range of ids, First to First+Count-1, leased through lock
// files in Dir.
type Pool struct {
	Dir   string
	First int
	Count int
}

// Lease is one id, held until Release.
type Lease struct {
	id   int
	f    *os.File
	path string
}

// ID is the leased uid, and gid of the same number.
func (l *Lease) ID() int { return l.id }

// Acquire leases an id that no live lease holds, starting from a random
// one so that concurrent starts seldom try the same. The lock files of
// holders that died without releasing go first (see sweep).
func (p *Pool) Acquire() (*Lease, error) {
	if p.Count <= 0 {
		return nil, fmt.Errorf("uid range %d+%d is empty", p.First, p.Count)
	}
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, err
	}
	p.sweep()
	start := rand.IntN(p.Count)
	for i := range p.Count {
		id := p.First + (start+i)%p.Count
		l, err := p.try(id)
		if err != nil {
			return nil, err
		}
		if l != nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%w (%d+%d, leases in %s)", ErrExhausted, p.First, p.Count, p.Dir)
}

// sweep removes the lock files that no live lease holds: those of holders
// that were killed (their lock died with them, their file did not).
func (p *Pool) sweep() {
	ents, err := os.ReadDir(p.Dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := p.try(id); err == nil && l != nil {
			l.Release()
		}
	}
}

// try takes id's lock file, or returns nil if a live lease holds it.
func (p *Pool) try(id int) (*Lease, error) {
	path := filepath.Join(p.Dir, strconv.Itoa(id))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	// A holder that released meanwhile unlinked the file we opened: the
	// lock is on a file no one else will open, and the id's current file
	// may be another's. Only the file at the path counts.
	var held, named unix.Stat_t
	if unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(path, &named) != nil || held.Ino != named.Ino || held.Dev != named.Dev {
		f.Close()
		return nil, nil
	}
	return &Lease{id: id, f: f, path: path}, nil
}

// Release frees the id: its lock file goes, then the lock.
func (l *Lease) Release() {
	if l == nil || l.f == nil {
		return
	}
	os.Remove(l.path)
	l.f.Close()
	l.f = nil
}
