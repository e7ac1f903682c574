package agent

import (
	"io"
	"sync"
)

// LogSink is where the agent's log records go: the console always, and
// the host's log stream once the host opens one (the host re-emits the
// records with source=guest).
type LogSink struct {
	console io.Writer

	mu   sync.Mutex // guards host
	host io.WriteCloser
}

// NewLogSink writes to console until a host stream attaches.
func NewLogSink(console io.Writer) *LogSink { return &LogSink{console: console} }

func (s *LogSink) Write(p []byte) (int, error) {
	s.console.Write(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.host != nil {
		if _, err := s.host.Write(p); err != nil {
			s.host.Close()
			s.host = nil
		}
	}
	return len(p), nil
}

func (s *LogSink) attach(w io.WriteCloser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.host != nil {
		s.host.Close()
	}
	s.host = w
}
