package sandboxsvc

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Pausing a sandbox, as E2B's pause and resume: its processes are frozen
// where they are (lodge pause: their cgroup, in its VM), with their memory
// and open files, until a resume thaws them; nothing in it runs meanwhile.
// A paused sandbox has no deadline of its own: it is removed MaxPaused
// after its pause unless resumed (its container's monitor holds that
// deadline too, as it holds a running one's), and a resume gives it the
// time it had left, or what the caller asks. One made with "on_timeout":
// "pause" is paused at its deadline instead of removed, by its container's
// monitor (lodge run --on-timeout pause), so that this holds with no
// service running; the service then takes it as paused.
//
// What a pause does not do (yet): write the VM's memory out. The guest
// stays in the host's memory, and so counts against --max-sandboxes, with
// only its vCPUs idle (docs/sandbox-service.md).

// notPaused says sandbox id is paused, where a call needs it to run.
func (s *Service) notPaused(id string) error {
	sb, err := s.Get(id)
	if err != nil {
		return err
	}
	if !sb.PausedAt.IsZero() {
		return conflict{fmt.Sprintf("sandbox %s is paused: resume it first (POST /v1/sandboxes/%s/resume)", id, id)}
	}
	return nil
}

// awake returns nil if sandbox id runs. One that is paused is resumed
// first if it was made with auto_resume (E2B's autoResume: any call that
// needs it running wakes it, with the time it had left), else refused.
func (s *Service) awake(ctx context.Context, id string) error {
	for wait := time.Now().Add(turnWait); ; time.Sleep(50 * time.Millisecond) {
		err := s.notPaused(id)
		var c conflict
		if err == nil || !errors.As(err, &c) {
			return err
		}
		sb, gerr := s.Get(id)
		if gerr != nil || !sb.AutoResume {
			return err
		}
		_, err = s.Resume(ctx, id, 0)
		switch {
		case err == nil:
			return nil
		case errors.As(err, &c) && time.Now().Before(wait):
			continue // another call pauses or resumes it: look again once it has
		case errors.As(err, &c):
			return err
		}
		return fmt.Errorf("sandbox %s is paused, and its resume failed: %w", id, err)
	}
}

// turnWait bounds how long a call that wakes a paused sandbox waits for
// another's pause or resume of it.
const turnWait = 30 * time.Second

// transition marks sandbox id as being paused or resumed, so that two
// such calls (a caller's and the reaper's) never cross, and returns its
// record as it is then; done ends it.
func (s *Service) transition(id string) (sb Sandbox, done func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.boxes[id]
	if !ok {
		return Sandbox{}, nil, fmt.Errorf("%w: %s", errNotFound, id)
	}
	if s.turning[id] {
		return Sandbox{}, nil, conflict{fmt.Sprintf("sandbox %s is being paused or resumed", id)}
	}
	s.turning[id] = true
	return *rec, func() {
		s.mu.Lock()
		delete(s.turning, id)
		s.mu.Unlock()
	}, nil
}

// Pause freezes sandbox id until Resume.
func (s *Service) Pause(ctx context.Context, id string) (Sandbox, error) {
	sb, done, err := s.transition(id)
	if err != nil {
		return Sandbox{}, err
	}
	defer done()
	if !sb.PausedAt.IsZero() {
		return Sandbox{}, conflict{fmt.Sprintf("sandbox %s is paused already", id)}
	}
	ctx = context.WithoutCancel(ctx)
	at := s.now()
	if err := s.run.Pause(ctx, id); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s: pause: %w", id, err)
	}
	// Then the paused sandbox's deadline. Until it is set the old one
	// holds, which stops a paused container: never a sandbox that runs
	// past its time.
	if err := s.run.SetTimeout(ctx, id, s.cfg.MaxPaused); err != nil {
		if rerr := s.run.Resume(ctx, id); rerr != nil {
			s.log.Warn("sandbox: resume after a failed pause", "sandbox_id", id, "err", rerr)
		}
		return Sandbox{}, fmt.Errorf("sandbox %s: pause: %w", id, err)
	}
	return s.markPaused(id, "paused", at)
}

// markPaused records sandbox id as paused at now (its container is, and
// has MaxPaused from then: now is taken before its deadline was set, so
// that the record's is never later than its monitor's).
func (s *Service) markPaused(id, why string, now time.Time) (Sandbox, error) {
	sb, err := s.change(id, func(c *Sandbox) {
		c.LeftSeconds = max(int(c.ExpiresAt.Sub(now)/time.Second), 0)
		c.PausedAt, c.ExpiresAt = now, now.Add(s.cfg.MaxPaused)
	})
	if err == nil {
		s.happened("paused", sb, why)
		s.log.Info("sandbox "+why, "sandbox_id", id, "left_s", sb.LeftSeconds, "removed_at", sb.ExpiresAt.Format(time.RFC3339))
	}
	return sb, err
}

// Resume thaws paused sandbox id, which then ends seconds from now (0:
// the time it had left at its pause, or, with none left, the default
// timeout).
func (s *Service) Resume(ctx context.Context, id string, seconds int) (Sandbox, error) {
	if seconds < 0 {
		return Sandbox{}, badRequest{fmt.Sprintf("timeout_seconds %d: want 1 or more", seconds)}
	}
	sb, done, err := s.transition(id)
	if err != nil {
		return Sandbox{}, err
	}
	defer done()
	if sb.PausedAt.IsZero() {
		return Sandbox{}, conflict{fmt.Sprintf("sandbox %s is not paused", id)}
	}
	life, err := s.seconds(seconds, s.resumeLife(sb))
	if err != nil {
		return Sandbox{}, err
	}
	ctx = context.WithoutCancel(ctx)
	at := s.now()
	// Its deadline before anything in it runs again.
	if err := s.run.SetTimeout(ctx, id, life); err != nil {
		return Sandbox{}, fmt.Errorf("sandbox %s: resume: %w", id, err)
	}
	if err := s.run.Resume(ctx, id); err != nil {
		if terr := s.run.SetTimeout(ctx, id, max(sb.ExpiresAt.Sub(s.now()), time.Second)); terr != nil {
			s.log.Warn("sandbox: its paused deadline back after a failed resume", "sandbox_id", id, "err", terr)
		}
		return Sandbox{}, fmt.Errorf("sandbox %s: resume: %w", id, err)
	}
	return s.markRunning(id, at.Add(life), "resumed")
}

// resumeLife is what a resume of paused sb gives it unless asked: the
// time it had left, else the default timeout.
func (s *Service) resumeLife(sb Sandbox) time.Duration {
	if sb.LeftSeconds > 0 {
		return min(time.Duration(sb.LeftSeconds)*time.Second, s.cfg.MaxTimeout)
	}
	return s.cfg.DefaultTimeout
}

// markRunning records sandbox id as running, ending at end.
func (s *Service) markRunning(id string, end time.Time, why string) (Sandbox, error) {
	sb, err := s.change(id, func(c *Sandbox) {
		c.PausedAt, c.LeftSeconds, c.ExpiresAt = time.Time{}, 0, end
	})
	if err == nil {
		s.happened("resumed", sb, why)
		s.log.Info("sandbox "+why, "sandbox_id", id, "expires", sb.ExpiresAt.Format(time.RFC3339))
	}
	return sb, err
}

// reconcilePause brings sandbox sb's record in line with its container's
// state st (as listed at the reap), where they differ: a container its
// monitor paused at its deadline (on_timeout pause) or that was paused or
// thawed by hand (lodge pause, unpause); or, for an on_timeout pause
// sandbox past its deadline that still runs, pauses it. It reports
// whether the sandbox is to be left as it is by this reap.
func (s *Service) reconcilePause(ctx context.Context, sb Sandbox, st string, now time.Time) bool {
	paused := !sb.PausedAt.IsZero()
	switch {
	case st == "running" && !paused && sb.OnTimeout == "pause" && !now.Before(sb.ExpiresAt):
		// Its monitor pauses it within a second; this is for one whose
		// monitor did not.
		if now.After(sb.ExpiresAt.Add(monitorGrace)) {
			if _, err := s.Pause(ctx, sb.ID); err != nil {
				s.log.Warn("sandbox: pause at its deadline", "sandbox_id", sb.ID, "err", err)
			}
		}
		return true
	case (st == "paused") == paused || (st != "paused" && st != "running"):
		return false
	}
	// Both again, now that no pause or resume can change them: either may
	// have changed since the list.
	sb, done, err := s.transition(sb.ID)
	if err != nil {
		return true // a pause or resume under way: the next reap looks again
	}
	defer done()
	ctrs, err := s.run.List(ctx, s.owner)
	if err != nil {
		return true
	}
	st = ""
	for _, c := range ctrs {
		if c.Name == sb.ID {
			st = c.State
		}
	}
	switch paused = !sb.PausedAt.IsZero(); {
	case st == "paused" && !paused:
		// Its monitor took its deadline away: the paused one's.
		at := s.now()
		if err := s.run.SetTimeout(ctx, sb.ID, s.cfg.MaxPaused); err != nil {
			s.log.Warn("sandbox: paused by its container: deadline", "sandbox_id", sb.ID, "err", err)
			return true
		}
		s.markPaused(sb.ID, "paused (at its deadline, or by hand)", at)
	case st == "running" && paused:
		life, at := s.resumeLife(sb), s.now()
		if err := s.run.SetTimeout(ctx, sb.ID, life); err != nil {
			s.log.Warn("sandbox: thawed by hand: deadline", "sandbox_id", sb.ID, "err", err)
			return true
		}
		s.markRunning(sb.ID, at.Add(life), "running again (thawed by hand)")
	}
	return true
}

// monitorGrace is how long past an on_timeout pause sandbox's deadline the
// reaper leaves its pause to its container's monitor.
const monitorGrace = 5 * time.Second
