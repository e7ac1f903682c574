package sandbox

import (
	"log/slog"
	"sync"
	"time"
)

// Phase names, reported in logs (key "phase") and by benchmarks.
const (
	PhaseHostPrep  = "host_prep"
	PhaseVMMStart  = "vmm_start"
	PhaseBoot      = "boot_to_agent"
	PhaseRestore   = "restore_to_agent" // a clone: restore, agent, identity
	PhaseCreate    = "container_create"
	PhaseStart     = "container_start"
	PhaseTeardown  = "teardown"
	phaseLogPrefix = "phase done"
)

// phases records how long each start-up step took.
type phases struct {
	log  *slog.Logger
	mu   sync.Mutex // guards last
	last time.Time
}

func newPhases(log *slog.Logger) *phases { return &phases{log: log, last: time.Now()} }

// done logs the time since the previous phase ended.
func (p *phases) done(name string) {
	p.mu.Lock()
	now := time.Now()
	d := now.Sub(p.last)
	p.last = now
	p.mu.Unlock()
	p.log.Debug(phaseLogPrefix, "phase", name, "ms", float64(d.Microseconds())/1000)
}

// mark restarts the clock (for phases that do not follow the previous one).
func (p *phases) mark() {
	p.mu.Lock()
	p.last = time.Now()
	p.mu.Unlock()
}
