package cli

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/spf13/cobra"
)

// servicesProject: db and cache depend on nothing, web on db, worker on
// web and cache.
func servicesProject() *types.Project {
	dep := func(names ...string) types.DependsOnConfig {
		d := types.DependsOnConfig{}
		for _, n := range names {
			d[n] = types.ServiceDependency{Condition: types.ServiceConditionStarted, Required: true}
		}
		return d
	}
	return &types.Project{Name: "p", Services: types.Services{
		"db": {Name: "db"}, "cache": {Name: "cache"},
		"web":    {Name: "web", WorkloadSpec: types.WorkloadSpec{DependsOn: dep("db")}},
		"worker": {Name: "worker", WorkloadSpec: types.WorkloadSpec{DependsOn: dep("web", "cache")}},
	}}
}

// Services that do not depend on each other start at once; one starts only
// once those it depends on are up; the names come in the given order.
func TestUpServicesAtOnce(t *testing.T) {
	c := &composeCmd{cmd: &cobra.Command{}, p: servicesProject()}
	c.cmd.SetErr(&bytes.Buffer{})
	var mu sync.Mutex
	up := map[string]bool{}
	cacheStarted := make(chan struct{})
	start := func(s types.ServiceConfig) ([]string, error) {
		if s.Name == "db" {
			// db is up only once cache has started beside it: were they
			// started one after the other, this would wait out its time.
			select {
			case <-cacheStarted:
			case <-time.After(10 * time.Second):
				return nil, errors.New("cache did not start while db was starting")
			}
		}
		if s.Name == "cache" {
			close(cacheStarted)
		}
		mu.Lock()
		defer mu.Unlock()
		for d := range s.DependsOn {
			if !up[d] {
				return nil, errors.New(s.Name + " started before " + d + " was up")
			}
		}
		up[s.Name] = true
		return []string{"p-" + s.Name + "-1"}, nil
	}
	names, err := c.upServices([]string{"db", "cache", "web", "worker"}, start)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names, " "); got != "p-db-1 p-cache-1 p-web-1 p-worker-1" {
		t.Errorf("names %q", got)
	}
}

// A service that fails keeps those that depend on it from starting, and
// its error is up's; the others still start.
func TestUpServicesFailure(t *testing.T) {
	c := &composeCmd{cmd: &cobra.Command{}, p: servicesProject()}
	c.cmd.SetErr(&bytes.Buffer{})
	var mu sync.Mutex
	var started []string
	start := func(s types.ServiceConfig) ([]string, error) {
		mu.Lock()
		started = append(started, s.Name)
		mu.Unlock()
		if s.Name == "db" {
			return nil, errors.New("db: pull failed")
		}
		return []string{s.Name}, nil
	}
	_, err := c.upServices([]string{"db", "cache", "web", "worker"}, start)
	if err == nil || err.Error() != "db: pull failed" {
		t.Errorf("up: %v, want db's error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(strings.Join(started, " "), "web") || strings.Contains(strings.Join(started, " "), "worker") {
		t.Errorf("started %v: web and worker depend on the failed db", started)
	}
	if !strings.Contains(strings.Join(started, " "), "cache") {
		t.Errorf("started %v: cache depends on nothing that failed", started)
	}
}
