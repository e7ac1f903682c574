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
	c.cmd.SetErr(out)      // services print their progress lines at once
	at := map[string]int{} // a service's place in order
	done := make([]chan struct{}, len(order))
	for i, n := range order {
		at[n], done[i] = i, make(chan struct{})
	}
	names := make([][]string, len(order))
	errs := make([]error, len(order)) // errs[i] is set before done[i] closes
	var wg sync.WaitGroup
	for i, n := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done[i])
			s := c.p.Services[n]
			for _, d := range slices.Sorted(maps.Keys(s.DependsOn)) {
				if j, ok := at[d]; ok {
					if <-done[j]; errs[j] != nil {
						errs[i] = fmt.Errorf("service %s: %w: %s", n, errDepFailed, d)
						return
					}
				}
			}
			names[i], errs[i] = start(s)
		}()
	}
	wg.Wait()
	// The first cause: an error of its own, not one that only follows
	// from another's (a service whose dependency failed names it).
	for _, e := range errs {
		if e != nil && !errors.Is(e, errDepFailed) {
			return nil, e
		}
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
