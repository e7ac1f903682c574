package uidlease

import (
	"errors"
	"os"
	"sync"
	"testing"
)

// Concurrent leases never share an id; released ones leave no file and
// are leased again; a full range says so.
func TestLeasesAreUniqueAndReleased(t *testing.T) {
	t.Parallel()
	p := &Pool{Dir: t.TempDir(), First: 5000, Count: 64}
	var mu sync.Mutex
	held := map[int]bool{}
	var leases []*Lease
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := p.Acquire()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if held[l.ID()] || l.ID() < 5000 || l.ID() >= 5064 {
				t.Errorf("uid %d leased twice or out of range", l.ID())
			}
			held[l.ID()] = true
			leases = append(leases, l)
		}()
	}
	wg.Wait()
	if _, err := p.Acquire(); !errors.Is(err, ErrExhausted) {
		t.Errorf("a 65th lease of 64: %v", err)
	}
	freed := leases[0].ID()
	leases[0].Release()
	if l, err := p.Acquire(); err != nil || l.ID() != freed {
		t.Errorf("after a release: %v %v, want uid %d", l, err, freed)
	} else {
		leases[0] = l
	}
	for _, l := range leases {
		l.Release()
	}
	if ents, _ := os.ReadDir(p.Dir); len(ents) != 0 {
		t.Errorf("left after every release: %v", ents)
	}
}

// A holder that died without releasing (its lock gone with it) leaves a
// file: its id is leased again, and the next lease removes it.
func TestDeadHolderFreesItsID(t *testing.T) {
	t.Parallel()
	p := &Pool{Dir: t.TempDir(), First: 7000, Count: 1}
	l, err := p.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	l.f.Close() // what the kernel does when the holder dies
	l2, err := p.Acquire()
	if err != nil || l2.ID() != 7000 {
		t.Fatalf("%v %v", l2, err)
	}
	l2.Release()

	wide := &Pool{Dir: t.TempDir(), First: 8000, Count: 1000}
	var dead []*Lease
	for range 5 {
		l, err := wide.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		dead = append(dead, l)
	}
	live := dead[0]
	for _, l := range dead[1:] {
		l.f.Close() // killed
	}
	next, err := wide.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(wide.Dir)
	if len(ents) != 2 {
		t.Errorf("lock files after 4 holders died: %d, want 2 (the live lease and the new one)", len(ents))
	}
	live.Release()
	next.Release()
}
