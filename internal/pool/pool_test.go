package pool

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/filelock"
)

// files makes the three descriptors a keeper hands over: pipes whose write
// ends the test keeps, so that it can tell the claimant got these ones.
func files(t *testing.T) (hand []*os.File, writers []*os.File) {
	t.Helper()
	for i := 0; i < nFiles; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		hand, writers = append(hand, r), append(writers, w)
	}
	return hand, writers
}

type offered struct {
	cl  *Claimant
	err error
}

func offer(t *testing.T, s *Slot, o Offer, hand []*os.File, gone <-chan struct{}) <-chan offered {
	t.Helper()
	ch := make(chan offered, 1)
	go func() {
		cl, err := s.Offer(context.Background(), o, hand, gone)
		ch <- offered{cl, err}
	}()
	waitReady(t, s.Dir)
	return ch
}

func waitReady(t *testing.T, dir string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(filepath.Join(dir, readyFile)); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the clone was never offered")
}

// A keeper's slot is one of Size; the clone it offers is claimed once,
// with its descriptors and offer; once accepted the slot is free again
// and the keeper knows its claimant.
func TestTakeOfferClaim(t *testing.T) {
	p := &Pool{Dir: t.TempDir(), Size: 1}
	s, err := p.Take("k1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Take("k1"); !errors.Is(err, ErrFull) {
		t.Fatalf("a second keeper of a pool of 1: %v, want ErrFull", err)
	}
	if h, err := p.Claim(context.Background(), "k1"); h != nil || err != nil {
		t.Fatalf("claim before any offer: %v, %v", h, err)
	}
	hand, writers := files(t)
	var readied atomic.Int32
	s.OnReady = func() { readied.Add(1) }
	res := offer(t, s, Offer{KeeperPID: 7, VMPID: 8, StateDir: "/x"}, hand, nil)
	if st := p.Status("k1"); st.Ready != 1 {
		t.Errorf("status while offered: %+v", st)
	}
	h, err := p.Claim(context.Background(), "k1")
	if err != nil || h == nil {
		t.Fatalf("claim: %v, %v", h, err)
	}
	if h.Offer.VMPID != 8 || h.Offer.KeeperPID != 7 || h.Offer.StateDir != "/x" || len(h.Files) != nFiles {
		t.Fatalf("offer %+v with %d files", h.Offer, len(h.Files))
	}
	for i, w := range writers { // the claimant reads what the keeper's pipes carry
		w.Write([]byte{byte('a' + i)})
		b := make([]byte, 1)
		if _, err := io.ReadFull(h.Files[i], b); err != nil || b[0] != byte('a'+i) {
			t.Errorf("file %d: %q %v", i, b, err)
		}
	}
	if h2, _ := p.Claim(context.Background(), "k1"); h2 != nil {
		t.Fatal("a clone claimed twice")
	}
	if err := h.Accept(); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.cl == nil || r.cl.PID != os.Getpid() {
		t.Fatalf("keeper: %+v", r)
	}
	if n := readied.Load(); n != 1 {
		t.Errorf("OnReady ran %d times for one offered clone, want 1", n)
	}
	r.cl.Close()
	if p.Free("k1") != 1 {
		t.Error("the slot stays held after the clone was handed out")
	}
	s.Close()
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("the clone's directory is left: %v", err)
	}
}

// A claimant that gives the clone back (Refuse) makes the keeper's Offer
// fail, so that the keeper ends the VM; a drain ends an offer too.
func TestRefuseAndDrain(t *testing.T) {
	p := &Pool{Dir: t.TempDir(), Size: 2}
	s, _ := p.Take("k")
	hand, _ := files(t)
	res := offer(t, s, Offer{}, hand, nil)
	h, err := p.Claim(context.Background(), "k")
	if err != nil || h == nil {
		t.Fatal(err)
	}
	h.Refuse()
	if r := <-res; r.err == nil || errors.Is(r.err, ErrDrained) {
		t.Fatalf("offer refused by its claimant: %v", r.err)
	}
	s.Close()

	s2, _ := p.Take("k")
	res = offer(t, s2, Offer{}, hand, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { <-res; s2.Close() }()
	p.Drain(ctx, "k")
	if ctx.Err() != nil || p.Free("k") != 2 {
		t.Fatalf("drain: %v, %d slots free", ctx.Err(), p.Free("k"))
	}
}

// Keepers that start the next slot's keeper once their clone is offered
// (as PoolKeeperMain does) fill the pool; a drain still empties it: the
// keepers it drains start others, which find no free slot.
func TestDrainStopsARefillingChain(t *testing.T) {
	p := &Pool{Dir: t.TempDir(), Size: 3}
	hand, _ := files(t)
	var keep func()
	started := make(chan error, 100)
	keep = func() { // one keeper: take a slot, offer until drained
		s, err := p.Take("k")
		started <- err
		if err != nil {
			return
		}
		defer s.Close()
		s.OnReady = func() {
			if p.Free("k") > 0 {
				go keep()
			}
		}
		s.Offer(context.Background(), Offer{}, hand, nil)
	}
	go keep()
	for i := 0; i < 200 && p.Status("k").Ready < 3; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if st := p.Status("k"); st.Ready != 3 {
		t.Fatalf("the chain filled %d of 3 slots", st.Ready)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.Drain(ctx, "k")
	if ctx.Err() != nil {
		t.Fatal("drain did not end: the chain kept refilling")
	}
	time.Sleep(100 * time.Millisecond) // a keeper started late has tried its Take
	if st := p.Status("k"); st.Ready != 0 || p.Free("k") != 3 {
		t.Fatalf("after drain: %+v, %d free", st, p.Free("k"))
	}
	if d, _ := filepath.Glob(filepath.Join(p.Dir, "k", "vm-*")); len(d) != 0 {
		t.Errorf("clone directories left: %v", d)
	}
}

// The VM dying while it is offered ends the offer; the directory of a
// keeper that died (no alive lock) is swept.
func TestGoneAndSweep(t *testing.T) {
	p := &Pool{Dir: t.TempDir(), Size: 1}
	s, _ := p.Take("k")
	hand, _ := files(t)
	gone := make(chan struct{})
	res := offer(t, s, Offer{}, hand, gone)
	close(gone)
	if r := <-res; r.err == nil {
		t.Fatal("an offer outlived its VM")
	}
	dead := filepath.Join(p.Dir, "k", "vm-dead")
	os.MkdirAll(filepath.Join(dead, SandboxDir), 0o700)
	os.WriteFile(filepath.Join(dead, readyFile), nil, 0o600)
	if h, err := p.Claim(context.Background(), "k"); h != nil || err != nil {
		t.Fatalf("claimed a dead keeper's clone: %v %v", h, err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead keeper's offered clone survives a claim that found nobody there: %v", err)
	}
	os.MkdirAll(filepath.Join(dead, SandboxDir), 0o700)
	killed := filepath.Join(p.Dir, "k", ".new-killed") // a keeper killed in Take
	os.Mkdir(killed, 0o700)
	making := filepath.Join(p.Dir, "k", ".new-making") // a keeper in Take
	os.Mkdir(making, 0o700)
	old := time.Now().Add(-2 * time.Minute)
	os.Chtimes(killed, old, old)
	p.Sweep("k")
	for _, d := range []string{dead, killed} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("a dead keeper's directory survives Sweep: %v", err)
		}
	}
	for _, d := range []string{s.Dir, making} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("Sweep removed a live keeper's directory: %v", err)
		}
	}
	s.Close()
}

// A keeper that died after the next keeper's Take swept (its lock still
// held then) is swept once that keeper offers its clone.
func TestOfferSweeps(t *testing.T) {
	p := &Pool{Dir: t.TempDir(), Size: 1}
	s, err := p.Take("k")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dead := filepath.Join(p.Dir, "k", "vm-dead")
	os.MkdirAll(filepath.Join(dead, SandboxDir), 0o700)
	os.WriteFile(filepath.Join(dead, readyFile), nil, 0o600)
	hand, _ := files(t)
	gone := make(chan struct{})
	res := offer(t, s, Offer{}, hand, gone)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a dead keeper's directory survives the next offer: %v", err)
	}
	close(gone)
	<-res
}

// A template whose pool was never filled has every slot free (the first
// sandbox of a template must start a keeper).
// A pool below a deep directory (a socket path past the kernel's 107
// bytes) still hands out its clones.
func TestDeepPoolDir(t *testing.T) {
	p := &Pool{Dir: filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60)), Size: 1}
	s, err := p.Take("a-rather-long-template-key-1cpu-256M-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hand, _ := files(t)
	res := offer(t, s, Offer{VMPID: 9}, hand, nil)
	h, err := p.Claim(context.Background(), "a-rather-long-template-key-1cpu-256M-0123456789abcdef")
	if err != nil || h == nil || h.Offer.VMPID != 9 {
		t.Fatalf("claim below a deep directory: %v %v", h, err)
	}
	h.Accept()
	if r := <-res; r.err != nil {
		t.Fatal(r.err)
	}
}

func TestFreeBeforeAnyKeeper(t *testing.T) {
	p := &Pool{Dir: filepath.Join(t.TempDir(), "none-yet"), Size: 3}
	if n := p.Free("k"); n != 3 {
		t.Fatalf("free slots of a pool never filled: %d, want 3", n)
	}
}

// A claimant that finds a keeper not answering waits a moment for it to
// let go of its locks (a killed keeper's QEMU can die before the keeper's
// last thread does), so that its directory goes and its slot is free for
// the refill; a sweep, which does not wait, leaves the directory.
func TestDeadKeeperSweptOnceItsLocksGo(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("needs flock(1)")
	}
	for _, tc := range []struct {
		by   string
		gone bool
	}{{"sweep", false}, {"claim", true}} {
		p := &Pool{Dir: t.TempDir(), Size: 1}
		dir := filepath.Join(p.Dir, "k", "vm-x")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, readyFile), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		alive := filepath.Join(dir, aliveFile)
		dying := exec.Command("flock", alive, "sleep", "0.3") // the keeper, about to end
		if err := dying.Start(); err != nil {
			t.Fatal(err)
		}
		for { // until the "keeper" holds its lock
			unlock, err := filelock.Lock(context.Background(), alive, false)
			if err != nil {
				break
			}
			unlock()
			time.Sleep(5 * time.Millisecond)
		}
		if tc.by == "sweep" {
			removeIfDead(dir)
		} else if h, err := p.Claim(context.Background(), "k"); h != nil || err != nil {
			t.Fatalf("claim of a clone whose keeper does not answer: %v, %v", h, err)
		}
		_, err := os.Stat(dir)
		if gone := errors.Is(err, os.ErrNotExist); gone != tc.gone {
			t.Errorf("a %s while the keeper ends (in 0.3 s): directory gone %t, want %t", tc.by, gone, tc.gone)
		}
		dying.Wait()
	}
}
