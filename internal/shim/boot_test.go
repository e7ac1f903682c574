package shim

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/sandbox"
)

// bootAll asks for the sandbox from n goroutines at once.
func bootAll(s *Service, n int) ([]*sandbox.Sandbox, []error) {
	sbs, errs := make([]*sandbox.Sandbox, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sbs[i], errs[i] = s.sandbox(context.Background(), "c", nil)
		}()
	}
	wg.Wait()
	return sbs, errs
}

// Twenty concurrent first Creates of a pod boot one VM and all get it.
func TestConcurrentFirstCreatesShareOneBoot(t *testing.T) {
	t.Parallel()
	var boots atomic.Int32
	vm := &sandbox.Sandbox{}
	s := New(Config{NewSandbox: func(context.Context, string, *specs.Spec) (*sandbox.Sandbox, error) {
		boots.Add(1)
		time.Sleep(100 * time.Millisecond)
		return vm, nil
	}})
	sbs, errs := bootAll(s, 20)
	for i := range sbs {
		if errs[i] != nil || sbs[i] != vm {
			t.Fatalf("caller %d: %p, %v", i, sbs[i], errs[i])
		}
	}
	if n := boots.Load(); n != 1 {
		t.Fatalf("%d VMs booted for one pod", n)
	}
}

// A failed boot is every waiter's error; the next Create boots anew.
func TestFailedBootIsSharedThenRetried(t *testing.T) {
	t.Parallel()
	var boots atomic.Int32
	bootErr := errors.New("guest did not boot")
	s := New(Config{NewSandbox: func(context.Context, string, *specs.Spec) (*sandbox.Sandbox, error) {
		boots.Add(1)
		time.Sleep(100 * time.Millisecond)
		return nil, bootErr
	}})
	_, errs := bootAll(s, 20)
	for i, err := range errs {
		if !errors.Is(err, bootErr) {
			t.Fatalf("caller %d: %v, want the boot's error", i, err)
		}
	}
	if n := boots.Load(); n != 1 {
		t.Fatalf("%d boots for 20 concurrent callers", n)
	}
	if _, err := s.sandbox(context.Background(), "c", nil); !errors.Is(err, bootErr) || boots.Load() != 2 {
		t.Fatalf("a later Create: %v after %d boots, want a second boot", err, boots.Load())
	}
}

// A waiter whose context ends stops waiting; the boot goes on for the rest.
func TestBootWaiterHonoursItsContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	vm := &sandbox.Sandbox{}
	s := New(Config{NewSandbox: func(context.Context, string, *specs.Spec) (*sandbox.Sandbox, error) {
		<-release
		return vm, nil
	}})
	first := make(chan error, 1)
	go func() { _, err := s.sandbox(context.Background(), "c", nil); first <- err }()
	for {
		s.mu.Lock()
		booting := s.boot != nil
		s.mu.Unlock()
		if booting {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.sandbox(ctx, "c", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiter past its deadline: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if sb, err := s.sandbox(context.Background(), "c", nil); sb != vm || err != nil {
		t.Fatalf("after the boot: %p, %v", sb, err)
	}
}
