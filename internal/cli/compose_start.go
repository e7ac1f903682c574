package cli

// lodge compose up's start of the services: at once where they do not
// depend on each other.

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/lodgeruntime/lodge/internal/compose"
)

// errDepFailed: a service did not start because one it depends on failed.
var errDepFailed = errors.New("not started, as a service it depends on failed")

// upServices starts (start) the containers of the services in order, each service
// once those it depends on are up (and their conditions met), services
// that do not depend on each other at once, as docker compose does. It
// returns the containers' names in order; the first error (by order) is
// its error, and a service whose dependency failed does not start.
func (c *composeCmd) upServices(order []string, start func(types.ServiceConfig) ([]string, error)) ([]string, error) {
	out := &lockedWriter{w: c.cmd.ErrOrStderr()}
	c.cmd.SetErr(out) // services print their progress lines at once
	done := map[string]chan struct{}{}
	for _, n := range order {
		done[n] = make(chan struct{})
	}
	names := make([][]string, len(order))
	errs := make([]error, len(order))
	failed := sync.Map{}
	var wg sync.WaitGroup
	for i, n := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[n])
			s := c.p.Services[n]
			for _, d := range slices.Sorted(maps.Keys(s.DependsOn)) {
				if ch, ok := done[d]; ok {
					<-ch
					if _, bad := failed.Load(d); bad {
						failed.Store(n, true)
						errs[i] = fmt.Errorf("service %s: %w: %s", n, errDepFailed, d)
						return
					}
				}
			}
			if names[i], errs[i] = start(s); errs[i] != nil {
				failed.Store(n, true)
			}
		}()
	}
	wg.Wait()
	// The first cause: an error of its own before one that only follows
	// from it.
	for _, e := range errs {
		if e != nil && !errors.Is(e, errDepFailed) {
			return nil, e
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(names...), nil
}

// upService starts a service's containers (its scale), once its
// dependencies' conditions hold, and removes the replicas beyond it.
func (c *composeCmd) upService(s types.ServiceConfig, o upOpts) ([]string, error) {
	if !o.noDeps {
		if err := c.waitDeps(s); err != nil {
			return nil, err
		}
	}
	if err := c.ensureImage(s, o); err != nil {
		return nil, err
	}
	hash := compose.Hash(s, c.imageID(compose.Image(c.p, s)))
	scale := s.GetScale()
	var names []string
	for i := 1; i <= scale; i++ {
		name := compose.ContainerName(c.p, s, i)
		if err := c.upContainer(s, compose.Container{Name: name, Hash: hash, Number: i, Detach: true}, o); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	// Replicas beyond the scale asked now.
	extra, _ := c.containers([]string{s.Name}, false)
	for _, r := range extra {
		if k, _ := strconv.Atoi(r.Labels[compose.LabelNumber]); k > scale {
			if err := c.remove(r, false, -1); err != nil {
				return nil, err
			}
		}
	}
	return names, nil
}

// lockedWriter serialises writes of several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
