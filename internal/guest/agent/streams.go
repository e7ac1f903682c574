package agent

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// maxPending bounds stdio streams opened by the host and not yet claimed.
const maxPending = 64

type streamKey struct {
	container, exec string
	kind            transport.Kind
}

// streams holds stdio streams from the host until the process they name
// claims them.
type streams struct {
	mu      sync.Mutex // guards pending and changed
	pending map[streamKey]net.Conn
	changed chan struct{} // closed and replaced whenever pending grows
}

func newStreams() *streams {
	return &streams{pending: map[streamKey]net.Conn{}, changed: make(chan struct{})}
}

func (s *streams) put(k streamKey, c net.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.pending[k]; dup {
		return fmt.Errorf("duplicate %s stream for %s/%s", k.kind, k.container, k.exec)
	}
	if len(s.pending) >= maxPending {
		return fmt.Errorf("too many unclaimed stdio streams")
	}
	s.pending[k] = c
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// take waits until the stream k arrives or ctx ends.
func (s *streams) take(ctx context.Context, k streamKey) (net.Conn, error) {
	for {
		s.mu.Lock()
		c, ok := s.pending[k]
		if ok {
			delete(s.pending, k)
		}
		changed := s.changed
		s.mu.Unlock()
		if ok {
			return c, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s stream of %s: %w", k.kind, k.container, ctx.Err())
		}
	}
}

// drop closes every unclaimed stream of a container.
func (s *streams) drop(container string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.pending {
		if k.container == container {
			c.Close()
			delete(s.pending, k)
		}
	}
}

// dropProcess closes the unclaimed streams of one process.
func (s *streams) dropProcess(container, exec string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.pending {
		if k.container == container && k.exec == exec {
			c.Close()
			delete(s.pending, k)
		}
	}
}
