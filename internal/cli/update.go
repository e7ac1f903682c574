package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/lodgeruntime/lodge/internal/sandbox"
	"github.com/lodgeruntime/lodge/internal/state"
)

// lodge update, as docker's: a container's limits (CPU, memory,
// processes), its restart policy and (Lodge's own) its deadline, while it
// runs or not. A running container's limits change at once, in its guest
// (its cgroup there) and on the host (the cgroup its VM runs in), through
// lodge-runtime update; its bundle keeps them for its next starts. The VM
// keeps the size it started with (vCPUs and memory: sized from the limits
// then, rounded up to a template's class), so what a raised limit asks
// beyond it takes effect when the container starts again; update says so.

type updateOpts struct {
	timeout           time.Duration
	cpus              float64
	memory            string
	pids              int64
	shares            int64
	restart           string
	allowOut, denyOut []string
	egressProxy       int
	egressDNS         int
}

// updateFlags are the flags update takes (one at least).
var updateFlags = []string{"cpus", "memory", "pids-limit", "cpu-shares", "restart", "timeout", "allow-out", "deny-out", "egress-proxy", "egress-dns"}

func addUpdateCommand(root *cobra.Command, a *app) {
	var o updateOpts
	update := &cobra.Command{
		Use:   "update [--cpus N] [-m SIZE] [--pids-limit N] [--cpu-shares N] [--restart POLICY] [--timeout D] [--deny-out CIDR] [--allow-out CIDR] CONTAINER...",
		Short: "change containers' CPU, memory and process limits, restart policy, deadline or egress rules, running or not",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if !anyChanged(f, updateFlags) {
				return lodgeError(errors.New("update: nothing to change: give --cpus, --memory, --pids-limit, --cpu-shares, --restart, --timeout, --deny-out or --allow-out"))
			}
			res, err := o.resources(f)
			if err != nil {
				return lodgeError(err)
			}
			var policy *restartPolicy
			if f.Changed("restart") {
				p, err := parseRestart(o.restart)
				if err != nil {
					return lodgeError(err)
				}
				policy = &p
			}
			if o.timeout < 0 {
				return lodgeError(fmt.Errorf("--timeout %v: want 0 or a positive duration", o.timeout))
			}
			var allow, deny *[]string
			if f.Changed("allow-out") {
				allow = &o.allowOut
			}
			if f.Changed("deny-out") {
				deny = &o.denyOut
			}
			var proxy, dns *int
			for _, p := range []struct {
				flag string
				v    *int
				to   **int
			}{{"egress-proxy", &o.egressProxy, &proxy}, {"egress-dns", &o.egressDNS, &dns}} {
				if f.Changed(p.flag) {
					if *p.v < 0 || *p.v > 65535 {
						return lodgeError(fmt.Errorf("--%s %d: want a port (0: none)", p.flag, *p.v))
					}
					*p.to = p.v
				}
			}
			if _, err := parseEgress(nonEmpty(allow), nonEmpty(deny)); err != nil {
				return lodgeError(err)
			}
			return eachCtr(cmd, args, func(r *ctrRecord) error {
				if allow != nil || deny != nil || proxy != nil || dns != nil {
					if err := updateEgress(cmd.Context(), r, allow, deny, proxy, dns); err != nil {
						return err
					}
				}
				if err := a.updateOne(cmd, r, res, policy, f.Changed("timeout"), o.timeout); err != nil {
					return err
				}
				r.emit("update")
				return nil
			})
		},
	}
	f := update.Flags()
	f.DurationVar(&o.timeout, "timeout", 0, "stop each container this long from now, e.g. 5m (0: no deadline for this run)")
	f.Float64Var(&o.cpus, "cpus", 0, "CPUs (e.g. 1.5)")
	f.StringVarP(&o.memory, "memory", "m", "", "memory limit (e.g. 256m, 1g)")
	f.Int64Var(&o.pids, "pids-limit", 0, "most processes at once (-1: no limit)")
	f.Int64Var(&o.shares, "cpu-shares", 0, "CPU shares, relative weight")
	f.StringVar(&o.restart, "restart", "", "restart policy: no, always, unless-stopped, on-failure[:N]")
	f.StringArrayVar(&o.denyOut, "deny-out", nil, `the destinations it may not open connections to, replacing those it had (again for more; "": none), at once if it runs`)
	f.StringArrayVar(&o.allowOut, "allow-out", nil, `the destinations it may reach whatever --deny-out says, replacing those it had (again for more; "": none)`)
	f.IntVar(&o.egressProxy, "egress-proxy", 0, "the port of its gateway its TCP ports 80 and 443 go to (run --egress-proxy; 0: none)")
	f.IntVar(&o.egressDNS, "egress-dns", 0, "the port of its gateway its DNS goes to (run --egress-dns; 0: none)")
	root.AddCommand(update)
}

func anyChanged(f *pflag.FlagSet, names []string) bool {
	for _, n := range names {
		if f.Changed(n) {
			return true
		}
	}
	return false
}

// resources is what update's flags change (nil: no limit).
func (o updateOpts) resources(f *pflag.FlagSet) (*specs.LinuxResources, error) {
	if !anyChanged(f, []string{"cpus", "memory", "pids-limit", "cpu-shares"}) {
		return nil, nil
	}
	res := &specs.LinuxResources{}
	if f.Changed("memory") {
		n, err := parseBytes(o.memory)
		if err != nil || n < 6<<20 {
			return nil, fmt.Errorf("--memory %q: want a size of 6m or more (e.g. 256m, 1g)", o.memory)
		}
		res.Memory = &specs.LinuxMemory{Limit: &n}
	}
	if f.Changed("cpus") {
		if o.cpus < 0.01 || o.cpus > float64(runtime.NumCPU()) {
			return nil, fmt.Errorf("--cpus %v: want 0.01 to %d (this host's CPUs)", o.cpus, runtime.NumCPU())
		}
		period := uint64(100000)
		quota := int64(o.cpus * float64(period))
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if f.Changed("cpu-shares") {
		if o.shares < 2 || o.shares > 262144 {
			return nil, fmt.Errorf("--cpu-shares %d: want 2 to 262144", o.shares)
		}
		if res.CPU == nil {
			res.CPU = &specs.LinuxCPU{}
		}
		s := uint64(o.shares)
		res.CPU.Shares = &s
	}
	if f.Changed("pids-limit") {
		n := o.pids
		if n == 0 || n < -1 {
			return nil, fmt.Errorf("--pids-limit %d: want a number of processes, or -1 for no limit", n)
		}
		res.Pids = &specs.LinuxPids{Limit: &n}
	}
	return res, nil
}

// updateOne changes one container.
func (a *app) updateOne(cmd *cobra.Command, r *ctrRecord, res *specs.LinuxResources, policy *restartPolicy, setTimeout bool, timeout time.Duration) error {
	ctx := cmd.Context()
	_, running := r.status()
	if setTimeout && !running {
		return fmt.Errorf("container %s is not running (--timeout moves a running container's deadline)", r.Name)
	}
	if policy != nil && policy.Name != "no" && r.AutoRemove {
		return fmt.Errorf("container %s was run with --rm: it cannot have a restart policy", r.Name)
	}
	if res != nil {
		// The running container first: limits it refuses are not kept
		// for its next start either.
		if running {
			if err := a.updateRunning(cmd, r, res); err != nil {
				return err
			}
		}
		if err := mergeBundleResources(bundleDir(r.ID), res); err != nil {
			return fmt.Errorf("container %s: %w", r.Name, err)
		}
	}
	if policy == nil && !setTimeout {
		return nil
	}
	_, err := updateCtr(ctx, r.ID, func(c *ctrRecord) {
		if policy != nil {
			c.RestartPolicy = policy
		}
		if setTimeout {
			c.DeadlineFor, c.Deadline = c.StartedAt, time.Time{}
			if timeout > 0 {
				c.Deadline = time.Now().UTC().Add(timeout)
			}
		}
	})
	return err
}

// updateRunning changes a running container's limits in its guest and on
// the host, and says where they go beyond its VM.
func (a *app) updateRunning(cmd *cobra.Command, r *ctrRecord, res *specs.LinuxResources) error {
	args := []string{"update"}
	if res.Memory != nil {
		args = append(args, "--memory", strconv.FormatInt(*res.Memory.Limit, 10))
	}
	if c := res.CPU; c != nil && c.Quota != nil {
		args = append(args, "--cpu-quota", strconv.FormatInt(*c.Quota, 10), "--cpu-period", strconv.FormatUint(*c.Period, 10))
	}
	if c := res.CPU; c != nil && c.Shares != nil {
		args = append(args, "--cpu-shares", strconv.FormatUint(*c.Shares, 10))
	}
	if res.Pids != nil {
		args = append(args, "--pids-limit", strconv.FormatInt(*res.Pids.Limit, 10))
	}
	if code, msg := a.runtime(cmd.Context(), io.Discard, append(args, r.ID)...); code != 0 {
		return fmt.Errorf("container %s: %s", r.Name, msg)
	}
	var st stateOut
	var out bytes.Buffer
	if code, _ := a.runtime(cmd.Context(), &out, "state", r.ID); code != 0 || json.Unmarshal(out.Bytes(), &st) != nil {
		return nil
	}
	vcpus, _ := strconv.Atoi(st.Annotations["io.lodge.vm.vcpus"])
	mib, _ := strconv.Atoi(st.Annotations["io.lodge.vm.memory_mib"])
	over := res.Memory != nil && mib > 0 && *res.Memory.Limit > int64(mib-sandbox.VMOverheadMiB)<<20
	if c := res.CPU; c != nil && c.Quota != nil && vcpus > 0 && float64(*c.Quota)/float64(*c.Period) > float64(vcpus) {
		over = true
	}
	if over {
		fmt.Fprintf(cmd.ErrOrStderr(), "lodge: container %s: its VM has %d vCPUs and %d MiB (%d MiB of it for the container): what the new limits ask beyond that takes effect when it starts again (lodge restart %s)\n",
			r.Name, vcpus, mib, mib-sandbox.VMOverheadMiB, r.Name)
	}
	return nil
}

// stateOut is what update reads of lodge-runtime state.
type stateOut struct {
	Annotations map[string]string `json:"annotations"`
}

// mergeBundleResources writes res's limits into the bundle's spec, which
// the container's next starts take.
func mergeBundleResources(bundle string, res *specs.LinuxResources) error {
	spec, err := readBundleSpec(bundle)
	if err != nil {
		return fmt.Errorf("its bundle: %w", err)
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Linux.Resources == nil {
		spec.Linux.Resources = &specs.LinuxResources{}
	}
	cur := spec.Linux.Resources
	if res.Memory != nil {
		cur.Memory = res.Memory
	}
	if res.CPU != nil {
		if cur.CPU == nil {
			cur.CPU = &specs.LinuxCPU{}
		}
		if res.CPU.Quota != nil {
			cur.CPU.Quota, cur.CPU.Period = res.CPU.Quota, res.CPU.Period
		}
		if res.CPU.Shares != nil {
			cur.CPU.Shares = res.CPU.Shares
		}
	}
	if res.Pids != nil {
		cur.Pids = res.Pids
		if *res.Pids.Limit < 0 {
			cur.Pids = nil
		}
	}
	return state.Write(filepath.Join(bundle, "config.json"), spec)
}
