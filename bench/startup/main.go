// Command startup measures how long `lodge-runtime run` of /bin/true takes,
// phase by phase, as a clone of a template (warm) and as a cold boot,
// beside the floors under each (a raw QEMU boot of the same kernel and
// initrd to agent-ready; a raw restore of the same template to
// agent-ready, through QEMU alone) and beside runc on the same bundle, all
// in one interleaved run so that machine load hits each equally. It prints
// medians and ratios.
//
//	go run ./bench/startup -bin ./bin -runs 5
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/pool"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/template"
	"github.com/lodgeruntime/lodge/internal/testbundle"
	"github.com/lodgeruntime/lodge/internal/vmm"
)

func main() {
	bin := flag.String("bin", "bin", "directory with lodge-runtime")
	runs := flag.Int("runs", 5, "runs of each measurement")
	flag.Parse()
	if err := run(*bin, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "startup bench:", err)
		os.Exit(1)
	}
}

type samples map[string][]time.Duration

func (s samples) median(k string) time.Duration {
	v := slices.Clone(s[k])
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// guestSection is the [guest] table of the configuration LODGE_CONFIG
// names (the defaults without it), for the bench's own configurations.
func guestSection() (string, error) {
	cfg, err := config.Load()
	if err != nil {
		return "", err
	}
	g := cfg.Guest
	return fmt.Sprintf("[guest]\ndir = %q\nkernel = %q\ninitrd = %q\n\n", g.Dir, g.Kernel, g.Initrd), nil
}

func run(bin string, runs int) error {
	work, err := os.MkdirTemp("", "lodge-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bundle := filepath.Join(work, "bundle")
	if err := testbundle.Write(bundle, testbundle.Spec("/bin/true")); err != nil {
		return err
	}
	// A long-running container for exec latency.
	sleeper := filepath.Join(work, "sleeper")
	if err := os.Mkdir(sleeper, 0o755); err != nil {
		return err
	}
	sp := testbundle.Spec("sleep", "100000")
	sp.Root.Path = filepath.Join(bundle, "rootfs") // runc refuses a symlinked rootfs
	if err := testbundle.WriteSpec(sleeper, sp); err != nil {
		return err
	}
	// Two configurations: templates in a directory of the bench's own
	// (warm), and templates off (cold). Each takes its guest (kernel,
	// initrd) from the configuration LODGE_CONFIG names, if any, so that
	// two guests can be compared.
	guest, err := guestSection()
	if err != nil {
		return err
	}
	tplDir := filepath.Join(work, "templates")
	warmCfg, coldCfg := filepath.Join(work, "warm.toml"), filepath.Join(work, "cold.toml")
	os.WriteFile(warmCfg, []byte(guest+"[template]\ndir = \""+tplDir+"\"\n"), 0o644)
	os.WriteFile(coldCfg, []byte(guest+"[template]\nenabled = false\n"), 0o644)
	// A third: the same templates with a pool of one clone ([template]
	// pool = 1), each run taking the clone its previous run's keeper pooled.
	pooledCfg := filepath.Join(work, "pooled.toml")
	os.WriteFile(pooledCfg, []byte(guest+"[template]\ndir = \""+tplDir+"\"\npool = 1\n"), 0o644)
	pl := &pool.Pool{Dir: filepath.Join(tplDir, ".pool"), Size: 1}
	defer func() { // nothing of the pool outlives the benchmark
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		keys, _ := os.ReadDir(pl.Dir)
		for _, k := range keys {
			pl.Drain(ctx, k.Name())
		}
		hostcg.Remove(config.DefaultPoolCgroup)
	}()
	cfg, err := config.LoadFile(warmCfg)
	if err != nil {
		return err
	}
	env, err := host.Resolve(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return err
	}
	runc, _ := exec.LookPath("runc")
	fmt.Printf("accelerator: %s (%s)\nguest: %s, %s\nruns: %d each, interleaved\n\n",
		env.Accel.Accel, env.Accel.Reason, cfg.Guest.Kernel, cfg.Guest.Initrd, runs)
	built := time.Now()
	tpl, err := sandbox.EnsureTemplate(context.Background(), env.Deps, env.SandboxConfig("bench", filepath.Join(work, "unused")))
	if err != nil {
		return err
	}
	fmt.Printf("template %s built in %.0f ms (once per shape and inputs)\n\n", tpl.Meta.Key,
		float64(time.Since(built).Milliseconds()))

	// The first pooled run finds the pool empty and fills it.
	if _, _, err := lodgeRun(bin, work, bundle, pooledCfg, "pool-fill"); err != nil {
		return err
	}
	s := samples{}
	for i := range runs {
		for _, mode := range []struct{ name, cfg string }{{"pooled", pooledCfg}, {"warm", warmCfg}, {"cold", coldCfg}} {
			if mode.name == "pooled" {
				if err := waitPooled(pl, tpl.Meta.Key); err != nil {
					return err
				}
			}
			d, phases, err := lodgeRun(bin, work, bundle, mode.cfg, fmt.Sprintf("%s-%d", mode.name, i))
			if err != nil {
				return err
			}
			s[mode.name+" run"] = append(s[mode.name+" run"], d)
			for k, v := range phases {
				s[mode.name+" "+k] = append(s[mode.name+" "+k], v)
			}
		}
		d, err := rawBoot(env, work, i)
		if err != nil {
			return err
		}
		s["raw boot"] = append(s["raw boot"], d)
		if d, err = rawClone(env, tpl, work, i); err != nil {
			return err
		}
		s["raw clone"] = append(s["raw clone"], d)
		lodgeRT := []string{filepath.Join(bin, "lodge-runtime"), "--root", filepath.Join(work, "root")}
		os.Setenv(config.EnvPath, warmCfg)
		if err := lifecycle(s, "lodge", lodgeRT, bundle, sleeper, i); err != nil {
			return err
		}
		os.Unsetenv(config.EnvPath)
		if runc != "" {
			if d, err = runcRun(runc, work, bundle, i); err != nil {
				return err
			}
			s["runc run"] = append(s["runc run"], d)
			if err := lifecycle(s, "runc", []string{runc, "--root", filepath.Join(work, "runc")}, bundle, sleeper, i); err != nil {
				return err
			}
		}
	}

	ms := func(d time.Duration) string { return fmt.Sprintf("%8.1f ms", float64(d.Microseconds())/1000) }
	fmt.Println("lodge-runtime run /bin/true, phases (median):   warm (clone)   cold (boot)  pooled (clone)")
	for _, p := range []string{sandbox.PhaseHostPrep, sandbox.PhaseVMMStart, sandbox.PhaseRestore, sandbox.PhaseBoot,
		sandbox.PhaseCreate, sandbox.PhaseStart, sandbox.PhaseTeardown} {
		fmt.Printf("  %-30s %s %s %s\n", p, ms(s.median("warm "+p)), ms(s.median("cold "+p)), ms(s.median("pooled "+p)))
	}
	line := func(k string, d time.Duration) { fmt.Printf("%-46s %s\n", k, ms(d)) }
	rat := func(k string, a, b time.Duration) { fmt.Printf("%-46s %8.2f\n", k, ratio(a, b)) }
	warm, cold := s.median("warm run"), s.median("cold run")
	fmt.Println()
	line("lodge-runtime run, warm (clone; wall, median)", warm)
	line("lodge-runtime run, cold (boot; wall, median)", cold)
	line("raw QEMU clone restore to agent-ready (median)", s.median("raw clone"))
	line("raw QEMU boot to agent-ready (median)", s.median("raw boot"))
	rat("ratio warm / cold", warm, cold)
	rat("ratio warm / raw clone restore", warm, s.median("raw clone"))
	rat("ratio cold / raw boot", cold, s.median("raw boot"))
	pooled := s.median("pooled run")
	line("lodge-runtime run, pooled clone (wall, median)", pooled)
	rat("ratio pooled / warm", pooled, warm)
	rat("ratio pooled / cold", pooled, cold)
	rat("ratio pooled / raw clone restore", pooled, s.median("raw clone"))
	if runc != "" {
		line("runc run (wall, median)", s.median("runc run"))
		rat("ratio warm / runc run", warm, s.median("runc run"))
	} else {
		fmt.Println("runc not installed: no runc baseline")
	}
	fmt.Println("\nCLI lifecycle (median):               lodge        runc    ratio")
	for _, k := range []string{"create", "start", "delete", "create+start+delete", "exec true"} {
		fmt.Printf("  %-30s %s %s %8.1f\n", k, ms(s.median("lodge "+k)), ms(s.median("runc "+k)),
			ratio(s.median("lodge "+k), s.median("runc "+k)))
	}
	return nil
}

// waitPooled waits (bounded) until key's pool offers a clone.
func waitPooled(p *pool.Pool, key string) error {
	for i := 0; i < 1200; i++ {
		if st := p.Status(key); st.Ready > 0 {
			return nil
		} else if i == 1199 {
			return fmt.Errorf("the pool did not fill within 2 minutes (%s)", st.LastError)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// lifecycle times create, start, delete of /bin/true, then exec of true
// in a running container (median of 3 per run), through the runc command
// line of either runtime.
func lifecycle(s samples, name string, rt []string, bundle, sleeper string, i int) error {
	do := func(args ...string) (time.Duration, error) {
		out, err := timed(exec.Command(rt[0], append(rt[1:], args...)...))
		if err != nil {
			return 0, fmt.Errorf("%s %v: %w: %s", name, args, err, out.output)
		}
		return out.d, nil
	}
	id := fmt.Sprintf("%s-life-%d", name, i)
	c, err := do("create", "--bundle", bundle, id)
	if err != nil {
		return err
	}
	st, err := do("start", id)
	if err != nil {
		return err
	}
	// /bin/true exits at once; delete once it is stopped.
	for j := 0; j < 500; j++ {
		out, _ := exec.Command(rt[0], append(rt[1:], "state", id)...).Output()
		if json.Valid(out) && bytes.Contains(out, []byte(`"stopped"`)) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	d, err := do("delete", id)
	if err != nil {
		return err
	}
	s[name+" create"] = append(s[name+" create"], c)
	s[name+" start"] = append(s[name+" start"], st)
	s[name+" delete"] = append(s[name+" delete"], d)
	s[name+" create+start+delete"] = append(s[name+" create+start+delete"], c+st+d)

	sid := fmt.Sprintf("%s-exec-%d", name, i)
	// Detached: the container keeps its stdio, so give it /dev/null, not a pipe.
	if err := exec.Command(rt[0], append(rt[1:], "run", "-d", "--bundle", sleeper, sid)...).Run(); err != nil {
		return fmt.Errorf("%s run -d: %w", name, err)
	}
	defer do("delete", "--force", sid)
	for range 3 {
		e, err := do("exec", sid, "true")
		if err != nil {
			return err
		}
		s[name+" exec true"] = append(s[name+" exec true"], e)
	}
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// lodgeRun times one `lodge-runtime run` under the config file cfg and
// reads its phase log.
func lodgeRun(bin, work, bundle, cfg, id string) (time.Duration, map[string]time.Duration, error) {
	logf := filepath.Join(work, id+".log")
	cmd := exec.Command(filepath.Join(bin, "lodge-runtime"), "--root", filepath.Join(work, "root"),
		"--debug", "--log-format", "json", "--log", logf, "run", "--bundle", bundle, "bench-"+id)
	cmd.Env = append(os.Environ(), config.EnvPath+"="+cfg)
	out, err := timed(cmd)
	if err != nil {
		return 0, nil, fmt.Errorf("lodge-runtime run: %w: %s", err, out.output)
	}
	f, err := os.Open(logf)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	phases := map[string]time.Duration{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Msg   string  `json:"msg"`
			Phase string  `json:"phase"`
			MS    float64 `json:"ms"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Phase != "" {
			phases[rec.Phase] = time.Duration(rec.MS * float64(time.Millisecond))
		}
	}
	return out.d, phases, nil
}

// rawBoot starts QEMU through the vmm driver with the same kernel and
// initrd, without a share or a container, and times it to the agent's
// handshake.
func rawBoot(env *host.Env, work string, i int) (time.Duration, error) {
	dir := filepath.Join(work, fmt.Sprintf("raw-%d", i))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	vc := env.VM
	vc.ID, vc.StateDir = fmt.Sprintf("raw-%d", i), dir
	ctx, cancel := context.WithTimeout(context.Background(), env.Config.VMM.BootTimeout.Duration)
	defer cancel()
	return toAgent(ctx, env, vc, time.Now(), nil)
}

// toAgent starts vc, restores it when state is not nil, and returns the
// time from start to the agent's handshake.
func toAgent(ctx context.Context, env *host.Env, vc vmm.Config, start time.Time, state *os.File) (time.Duration, error) {
	vm, err := env.Deps.Driver.Start(ctx, vc)
	if err != nil {
		return 0, err
	}
	defer vm.Shutdown(context.Background())
	// Dialled before the restore, as a sandbox does (a template's agent is
	// parked with its channel connected).
	conn, err := vm.Dial(ctx)
	if err != nil {
		return 0, err
	}
	if state != nil {
		if err := vm.(vmm.Restorer).Restore(ctx, state); err != nil {
			return 0, err
		}
	}
	c, err := agent.Connect(ctx, conn)
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	c.Close()
	return d, nil
}

// rawClone restores the template through the vmm driver alone (no share,
// no container; the 9p slot on the template's empty directory) and times
// it to the agent's handshake: the floor under a warm start.
func rawClone(env *host.Env, tpl *template.Template, work string, i int) (time.Duration, error) {
	dir := filepath.Join(work, fmt.Sprintf("rawclone-%d", i))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	state, err := os.Open(tpl.State())
	if err != nil {
		return 0, err
	}
	defer state.Close()
	vc, closeSlot, err := sandbox.CloneConfig(env.VM, tpl,
		vmm.Share9P{Tag: sandbox.SharedTag, Path: filepath.Join(tpl.Dir, template.EmptyDir)})
	if err != nil {
		return 0, err
	}
	defer closeSlot()
	vc.ID, vc.StateDir = fmt.Sprintf("rawclone-%d", i), dir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return toAgent(ctx, env, vc, time.Now(), state)
}

func runcRun(runc, work, bundle string, i int) (time.Duration, error) {
	cmd := exec.Command(runc, "--root", filepath.Join(work, "runc"), "run", "--bundle", bundle, fmt.Sprintf("runc-%d", i))
	out, err := timed(cmd)
	if err != nil {
		return 0, fmt.Errorf("runc run: %w: %s", err, out.output)
	}
	return out.d, nil
}

type timing struct {
	d      time.Duration
	output []byte
}

// timed runs cmd with its output in a file: a created or detached
// container keeps its stdio open, and a pipe would wait for it to end.
func timed(cmd *exec.Cmd) (timing, error) {
	f, err := os.CreateTemp("", "lodge-bench-out-")
	if err != nil {
		return timing{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	start := time.Now()
	err = cmd.Run()
	d := time.Since(start)
	out, _ := os.ReadFile(f.Name())
	return timing{d: d, output: out}, err
}
