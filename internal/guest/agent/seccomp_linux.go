package agent

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/guest/directinit"
	"github.com/lodgeruntime/lodge/internal/seccompbpf"
)

// seccompPrograms holds each seccomp profile's filter as compiled once
// (directinit's seccomp_linux.go says why), by the profile's content.
type seccompPrograms struct {
	mu sync.Mutex
	m  map[[32]byte]*directinit.SeccompProgram
}

// compiledSeccomp is the guest's: one agent per guest.
var compiledSeccomp seccompPrograms

// maxSeccompPrograms bounds the programs kept (a few KB each); past it
// they are all dropped, and compiled again as they are needed.
const maxSeccompPrograms = 32

// captureWait bounds a capture: a profile compiles in ~100 ms under TCG.
const captureWait = 20 * time.Second

// forFirstStep sets in's compiled filter, if in has a filter, and says
// how long compiling it took (0 if it had been compiled before, or there
// is no filter).
func (p *seccompPrograms) forFirstStep(in *directinit.Config) (time.Duration, error) {
	if in.Seccomp == nil || in.SeccompProgram != nil {
		return 0, nil
	}
	prog, took, err := p.program(in.Seccomp)
	if err != nil {
		return 0, err
	}
	in.SeccompProgram = prog
	return took, nil
}

// program returns s's compiled filter, compiling it the first time s is
// seen, and how long that took (0 when it was already compiled).
func (p *seccompPrograms) program(s *configs.Seccomp) (*directinit.SeccompProgram, time.Duration, error) {
	key, b, err := seccompKey(s)
	if err != nil {
		return nil, 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prog, ok := p.m[key]; ok {
		return prog, 0, nil
	}
	t := time.Now()
	prog, err := captureSeccomp(b)
	if err != nil {
		return nil, 0, err
	}
	p.keep(key, prog)
	return prog, max(time.Since(t), time.Nanosecond), nil
}

// seccompKey is s's key among the programs (the SHA-256 of its JSON) and
// the JSON.
func seccompKey(s *configs.Seccomp) ([32]byte, []byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return [32]byte{}, nil, err
	}
	return sha256.Sum256(b), b, nil
}

// keep adds prog as key's program; p.mu is held.
func (p *seccompPrograms) keep(key [32]byte, prog *directinit.SeccompProgram) {
	if p.m == nil || len(p.m) >= maxSeccompPrograms {
		p.m = map[[32]byte]*directinit.SeccompProgram{}
	}
	p.m[key] = prog
}

// afterCaptureRead, if set (by tests), is the captures' Helper.AfterRead.
var afterCaptureRead func(helper int)

// captureSeccomp runs the capture helper on profile (libcontainer's form,
// JSON) and returns the program its InitSeccomp loaded. The helper is the
// agent's own binary, which has libseccomp (lodge-init has not: it only
// loads programs). It runs within a process's start, while the reaper
// leaves the agent's children to their waiters, so the helper is this
// function's to wait for.
func captureSeccomp(profile []byte) (*directinit.SeccompProgram, error) {
	ctx, cancel := context.WithTimeout(context.Background(), captureWait)
	defer cancel()
	return seccompbpf.Capture(ctx, seccompbpf.Helper{Path: "/proc/self/exe",
		Args: []string{os.Args[0], DirectArg, directinit.CaptureArg}, AfterRead: afterCaptureRead}, profile)
}

// adopt returns s's program: the guest's, if it has one, or else prog,
// the host's compile of s, which it keeps as s's (and says so). The host
// compiled it with the agent's own helper, natively; a program this
// kernel could not load (flags it does not know, from a host kernel's
// answers to libseccomp's probes) or that is malformed is not taken, and
// adopt returns nil: s is then compiled here.
func (p *seccompPrograms) adopt(s *configs.Seccomp, prog *directinit.SeccompProgram) (*directinit.SeccompProgram, bool) {
	key, _, err := seccompKey(s)
	if err != nil {
		return nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if have, ok := p.m[key]; ok {
		return have, false
	}
	if prog.Check() != nil || !seccompbpf.FlagsSupported(prog.Flags) {
		return nil, false
	}
	p.keep(key, prog)
	return prog, true
}

// SeccompSpecMain is the helper of seccompbpf.SpecArg (the host's, which
// runs the agent's binary natively to compile a container's profile
// before the guest needs it, the profile in the runtime spec's form on
// seccompbpf.ConfigFd): it converts the
// profile as the agent converts a spec's (libcontainer's specconv) and
// compiles it as a capture helper; it returns only on error.
func SeccompSpecMain() error {
	var s specs.LinuxSeccomp
	if err := json.NewDecoder(os.NewFile(seccompbpf.ConfigFd, "capture-config")).Decode(&s); err != nil {
		return fmt.Errorf("seccomp capture: profile: %w", err)
	}
	cfg, err := specconv.SetupSeccomp(&s)
	if err != nil {
		return fmt.Errorf("seccomp capture: %w", err)
	}
	if cfg == nil || cfg.ListenerPath != "" {
		return errors.New("seccomp capture: no filter to compile, or one with a listener")
	}
	return directinit.CaptureSeccomp(cfg)
}
