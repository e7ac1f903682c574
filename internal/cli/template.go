package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lodgeruntime/lodge/internal/config"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/hostcg"
	"github.com/lodgeruntime/lodge/internal/pool"
	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/template"
)

const templateUsage = `usage: lodge template build [--vcpus N] [--memory MiB]
       lodge template ls
       lodge template rm KEY... | --all
       lodge template drain [KEY...]`

// cmdTemplate manages VM templates: build one ahead of the first sandbox,
// list them, remove them (refused while clones run).
func cmdTemplate(ctx context.Context, cfg config.Config, log *slog.Logger, out io.Writer, args []string) error {
	if len(args) == 0 {
		return errors.New(templateUsage)
	}
	store := &template.Store{Dir: cfg.Template.Dir, Log: log}
	p := host.PoolOf(cfg)
	if p != nil {
		store.Drain = p.Drain
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprintln(out, templateUsage)
		return nil
	case "ls", "list":
		return templateList(store, p, out)
	case "rm", "remove":
		keys := args[1:]
		if len(keys) == 1 && (keys[0] == "--all" || keys[0] == "-a") {
			// Every template; one that clones use is refused, as by name.
			infos, err := store.List()
			if err != nil {
				return err
			}
			keys = nil
			for _, in := range infos {
				keys = append(keys, in.Key)
			}
			if len(keys) == 0 {
				return nil
			}
		}
		if len(keys) == 0 {
			return errors.New(templateUsage)
		}
		for _, key := range keys {
			if strings.HasPrefix(key, "-") {
				return fmt.Errorf("unknown flag %s\n%s", key, templateUsage)
			}
		}
		var errs []error
		for _, key := range keys {
			if err := store.Remove(ctx, key); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintln(out, key)
		}
		return errors.Join(errs...)
	case "build":
		return templateBuild(ctx, cfg, log, out, args[1:])
	case "drain":
		err := templateDrain(ctx, store, p, out, args[1:])
		if err == nil && len(args) == 1 {
			// Every pool is empty: its cgroup goes too (the next keeper
			// makes it again). One still in use stays.
			hostcg.Remove(cfg.Template.PoolCgroup)
		}
		return err
	}
	return fmt.Errorf("unknown template command %q\n%s", args[0], templateUsage)
}

// templateDrain ends the pooled clones of the templates named (all without
// a name), freeing their memory; the next sandboxes fill the pool again.
func templateDrain(ctx context.Context, store *template.Store, p *pool.Pool, out io.Writer, keys []string) error {
	if p == nil {
		return errors.New("no pool ([template] pool = 0 in the config)")
	}
	if len(keys) == 0 {
		infos, err := store.List()
		if err != nil {
			return err
		}
		for _, in := range infos {
			keys = append(keys, in.Key)
		}
	}
	for _, key := range keys {
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		p.Drain(dctx, key)
		late := dctx.Err() != nil
		cancel()
		if late && ctx.Err() == nil {
			return fmt.Errorf("template %s: its pool did not drain within a minute", key)
		}
		fmt.Fprintln(out, key)
	}
	return ctx.Err()
}

func templateBuild(ctx context.Context, cfg config.Config, log *slog.Logger, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("template build", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	vcpus := fs.Int("vcpus", cfg.VMM.VCPUs, "vCPUs (rounded up to a size class)")
	mem := fs.Int("memory", cfg.VMM.MemoryMiB, "memory in MiB (rounded up to a size class)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return errors.New(templateUsage)
	}
	if !cfg.Template.Enabled {
		return errors.New("templates are disabled ([template] enabled = false in the config)")
	}
	env, err := host.Resolve(cfg, log)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "lodge-template-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	sc := env.SandboxConfig("template-build", filepath.Join(tmp, "vm"))
	sc.VM.VCPUs, sc.VM.MemoryMiB = *vcpus, *mem
	t, err := sandbox.EnsureTemplate(ctx, env.Deps, sc)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, t.Meta.Key)
	return nil
}

// templateList prints the templates; with a pool, how many of each
// template's clones (counted in CLONES too) wait in it, and why its last
// keeper failed, if one did.
func templateList(store *template.Store, p *pool.Pool, out io.Writer) error {
	infos, err := store.List()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := "KEY\tVCPUS\tMEMORY\tINPUTS\tSIZE\tAGE\tCLONES"
	if p != nil {
		head += "\tPOOLED"
	}
	fmt.Fprintln(w, head)
	var fails []string
	for _, in := range infos {
		inputs := in.Key[strings.LastIndexByte(in.Key, '-')+1:]
		if in.Stale {
			inputs += " (stale)"
		}
		fmt.Fprintf(w, "%s\t%d\t%d MiB\t%s\t%.1f MiB\t%s\t%d", in.Key, in.Shape.VCPUs, in.Shape.MemoryMiB, inputs,
			float64(in.DiskBytes)/(1<<20), time.Since(in.Built).Round(time.Second), in.Clones)
		if p != nil {
			st := p.Status(in.Key)
			fmt.Fprintf(w, "\t%d/%d (%d filling)", st.Ready, p.Size, st.Filling)
			if st.LastError != "" {
				fails = append(fails, in.Key+": last keeper failed: "+st.LastError)
			}
		}
		fmt.Fprintln(w)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, f := range fails {
		fmt.Fprintln(out, f)
	}
	return nil
}
