package sandboxsvc

import (
	"context"
	"errors"
	"time"
)

// A sandbox's life as it happens (E2B's lifecycle events): made, paused,
// resumed, changed (its deadline or network), removed (and why: by a
// caller, at its deadline, gone). `GET /v1/events` follows them, each
// caller its own tenant's; the last lifecycleKept are kept for a follower
// that asks for them (`?replay=true`), so that one that reconnects misses
// nothing recent. A follower that falls lifecycleQueue events behind is
// let go (its stream ends with an error) rather than hold up the service.

const (
	lifecycleKept  = 256
	lifecycleQueue = 256
)

// LifecycleEvent is one step of a sandbox's life.
type LifecycleEvent struct {
	// Type is created, paused, resumed, updated or removed.
	Type      string    `json:"type"`
	SandboxID string    `json:"sandbox_id"`
	Time      time.Time `json:"time"`
	// Why says more: what removed it, what paused it, what changed.
	Why      string            `json:"why,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Error ends a stream that fell behind.
	Error  string `json:"error,omitempty"`
	tenant string
}

// lifecycleFollower is one GET /v1/events.
type lifecycleFollower struct {
	tenant, sandbox string // "" sandbox: all the tenant's
	events          chan LifecycleEvent
	behind          chan struct{} // closed when it is let go
}

// happened records an event of sandbox sb and hands it to its followers.
func (s *Service) happened(typ string, sb Sandbox, why string) {
	e := LifecycleEvent{Type: typ, SandboxID: sb.ID, Time: s.now().UTC(), Why: why, Metadata: sb.Metadata, tenant: sb.Tenant}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lifecycle = append(s.lifecycle, e); len(s.lifecycle) > lifecycleKept {
		s.lifecycle = s.lifecycle[len(s.lifecycle)-lifecycleKept:]
	}
	for f := range s.followers {
		if !f.wants(e) {
			continue
		}
		select {
		case f.events <- e:
		default:
			delete(s.followers, f)
			close(f.behind)
		}
	}
}

func (f *lifecycleFollower) wants(e LifecycleEvent) bool {
	return e.tenant == f.tenant && (f.sandbox == "" || f.sandbox == e.SandboxID)
}

// errBehind: a follower of events fell too far behind.
var errBehind = errors.New("fell behind the sandboxes' events: follow them again (with replay=true)")

// FollowLifecycle hands send the events of the caller's sandboxes (of
// sandbox alone, if given) as they happen, those kept first with replay,
// until ctx ends or send fails; ready is called once it follows.
func (s *Service) FollowLifecycle(ctx context.Context, sandbox string, replay bool, send func(LifecycleEvent) error, ready func()) error {
	f := &lifecycleFollower{tenant: tenantOf(ctx), sandbox: sandbox, events: make(chan LifecycleEvent, lifecycleQueue), behind: make(chan struct{})}
	s.mu.Lock()
	var first []LifecycleEvent
	if replay {
		for _, e := range s.lifecycle {
			if f.wants(e) {
				first = append(first, e)
			}
		}
	}
	if s.followers == nil {
		s.followers = map[*lifecycleFollower]struct{}{}
	}
	s.followers[f] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.followers, f)
		s.mu.Unlock()
	}()
	ready()
	for _, e := range first {
		if err := send(e); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-f.events:
			if err := send(e); err != nil {
				return err
			}
		case <-f.behind:
			// What it was handed before it was let go, then the end.
			for {
				select {
				case e := <-f.events:
					if err := send(e); err != nil {
						return err
					}
				default:
					return send(LifecycleEvent{Error: errBehind.Error()})
				}
			}
		}
	}
}
