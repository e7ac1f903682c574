package host

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/pool"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/template"
)

// PoolKeeperArg, as a Lodge program's first argument, makes it a pooled
// clone's keeper (PoolKeeperMain): every program that starts sandboxes
// starts keepers as itself.
const PoolKeeperArg = "__lodge-pool-keeper"

// poolDir is where the pools of cfg's templates are kept.
func poolDir(cfg config.Config) string { return filepath.Join(cfg.Template.Dir, ".pool") }

// PoolOf is cfg's pool (nil without one).
func PoolOf(cfg config.Config) *pool.Pool {
	if !cfg.Template.Enabled || cfg.Template.Pool == 0 {
		return nil
	}
	return &pool.Pool{Dir: poolDir(cfg), Size: cfg.Template.Pool}
}

// spawnKeeper starts a keeper for one free slot of key's pool, in a session
// of its own: it outlives whoever started it.
func spawnKeeper(log *slog.Logger) func(shape template.Shape, key string) {
	return func(shape template.Shape, key string) {
		exe, err := os.Executable()
		if err != nil {
			log.Warn("pool: cannot start a keeper", "err", err)
			return
		}
		cmd := exec.Command(exe, PoolKeeperArg, "-vcpus", strconv.Itoa(shape.VCPUs),
			"-memory-mib", strconv.Itoa(shape.MemoryMiB), "-key", key)
		cmd.Env = os.Environ()
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			log.Warn("pool: cannot start a keeper", "err", err)
			return
		}
		log.Debug("pool: keeper started", "template", key, "pid", cmd.Process.Pid)
		go cmd.Wait() //nolint:errcheck // its own log says how it went
	}
}

// PoolKeeperMain is a keeper's main (args after PoolKeeperArg): it takes a
// free slot of the template's pool (none: it exits at once), keeps a clone
// there until a sandbox has taken it and that sandbox's process has
// exited, and removes everything of it. It runs at idle priority, in the
// pool's host cgroup (template.pool_cgroup), until a sandbox takes its
// clone.
func PoolKeeperMain(args []string) int {
	fs := flag.NewFlagSet(PoolKeeperArg, flag.ContinueOnError)
	vcpus := fs.Int("vcpus", 0, "the template's vCPUs")
	mem := fs.Int("memory-mib", 0, "the template's memory")
	key := fs.String("key", "", "the template's key")
	if err := fs.Parse(args); err != nil || *vcpus < 1 || *mem < 1 || *key == "" {
		fmt.Fprintln(os.Stderr, "usage: "+PoolKeeperArg+" -vcpus N -memory-mib N -key KEY")
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p := PoolOf(cfg)
	if p == nil {
		return 0
	}
	// Out of the cgroups of whoever started it (a sandbox's, which goes
	// with it), into the pool's: where waiting clones are counted.
	if err := hostcg.LeaveForRoot(); err != nil {
		p.Fail(*key, fmt.Errorf("pool keeper: %w", err))
		return 1
	}
	if err := hostcg.Enter(cfg.Template.PoolCgroup); err != nil {
		p.Fail(*key, fmt.Errorf("pool keeper: template.pool_cgroup: %w", err))
		return 1
	}
	if err := sandbox.SchedIdle(); err != nil {
		p.Fail(*key, fmt.Errorf("pool keeper: idle priority: %w", err))
		return 1
	}
	slot, err := p.Take(*key)
	if errors.Is(err, pool.ErrFull) {
		return 0
	}
	if err != nil {
		p.Fail(*key, err)
		return 1
	}
	defer slot.Close()
	var out io.Writer = io.Discard
	if f, err := os.OpenFile(filepath.Join(slot.Dir, pool.LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		defer f.Close()
		out = f
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})).With("pool_keeper", os.Getpid())
	// Once this clone is offered, the keeper of the next free slot starts:
	// the pool fills one clone after another up to its size.
	slot.OnReady = func() {
		if p.Free(*key) > 0 {
			spawnKeeper(log)(template.Shape{VCPUs: *vcpus, MemoryMiB: *mem}, *key)
		}
	}
	fail := func(err error) int {
		slot.Fail(err)
		log.Error("pool keeper failed", "err", err)
		return 1
	}
	env, err := Resolve(cfg, log)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	waited := waitQuiet(ctx, quietMax)
	log.Info("pool keeper filling its slot", "template", *key, "waited_for_a_quiet_host", waited.Round(time.Millisecond))
	id := "pool-" + strings.TrimPrefix(filepath.Base(slot.Dir), "vm-")
	sc := env.SandboxConfig(id, "")
	sc.VM.VCPUs, sc.VM.MemoryMiB = *vcpus, *mem
	if err := sandbox.KeepPooled(ctx, env.Deps, sc, slot, *key); err != nil {
		if ctx.Err() != nil { // asked to stop
			log.Info("pool keeper stopped", "err", err)
			return 0
		}
		return fail(err)
	}
	return 0
}

// quietMax bounds how long a keeper waits for a quiet host.
const quietMax = 20 * time.Second

// waitQuiet waits, at most max, until the host has had at least 1.5 CPUs
// idle in two 250 ms windows in a row, and says how long it waited. A
// keeper starts when a sandbox has just taken a pooled clone: what runs
// next is that sandbox's first container, and the refill, at idle priority
// though it is, would still compete with it for memory bandwidth and the
// CPUs' caches (measured: a pod's first container 0.8 -> 1.3 s under TCG
// with the refill running beside it).
func waitQuiet(ctx context.Context, max time.Duration) time.Duration {
	start := time.Now()
	idle, total, ncpu := cpuTimes()
	quiet := 0
	for time.Since(start) < max && quiet < 2 {
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(250 * time.Millisecond):
		}
		i, t, _ := cpuTimes()
		if t > total && float64(i-idle)/float64(t-total)*float64(ncpu) >= 1.5 {
			quiet++
		} else {
			quiet = 0
		}
		idle, total = i, t
	}
	return time.Since(start)
}

// cpuTimes reads the host's idle and total CPU time (clock ticks, all CPUs)
// and the number of CPUs from /proc/stat.
func cpuTimes() (idle, total uint64, ncpu int) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 1
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 8 && f[0] == "cpu":
			for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
				n, _ := strconv.ParseUint(v, 10, 64)
				total += n
				if i == 3 || i == 4 {
					idle += n
				}
			}
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu"):
			ncpu++
		}
	}
	return idle, total, max(ncpu, 1)
}
