package cli

// lodge compose: multi-container applications from a Compose file, as
// docker compose and nerdctl compose run them. internal/compose reads the
// file and says what each service's container is; this file makes and
// removes networks, volumes and containers with lodge's own commands
// (each container a `lodge run -d`, as nerdctl compose runs nerdctl),
// so that every container is an ordinary one: lodge ps, logs, exec,
// inspect and rm see it. A project's containers are found by docker
// compose's labels.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/compose"
)

// composeCmd is a compose command's project and its means.
type composeCmd struct {
	a    *app
	cmd  *cobra.Command
	p    *types.Project
	self string
	// rebuilding is held while a watch's rebuild makes containers
	// again; rebuilds counts them (up --watch follows the new ones).
	rebuilding sync.Mutex
	rebuilds   atomic.Int64
}

func addComposeCommands(root *cobra.Command, a *app) {
	var co compose.Options
	c := &cobra.Command{Use: "compose", Short: "run multi-container applications from a Compose file"}
	pf := c.PersistentFlags()
	pf.StringArrayVar(&co.Files, "file", nil, "a Compose file (repeat to merge; default compose.yaml, docker-compose.yml, ... here or above)")
	pf.StringVarP(&co.Name, "project-name", "p", "", "the project's name (default: its directory's)")
	pf.StringVar(&co.WorkDir, "project-directory", "", "the project's directory (default: the first file's)")
	pf.StringArrayVar(&co.EnvFiles, "env-file", nil, "a file of variables for the Compose file (default .env in the project directory)")
	pf.StringArrayVar(&co.Profiles, "profile", nil, "a profile whose services to include")
	// load reads the project for a subcommand.
	load := func(cmd *cobra.Command) (*composeCmd, error) {
		p, err := compose.Load(cmd.Context(), co)
		if err != nil {
			return nil, err
		}
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return &composeCmd{a: a, cmd: cmd, p: p, self: self}, nil
	}
	run := func(f func(c *composeCmd, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := load(cmd)
			if err != nil {
				return err
			}
			return f(c, args)
		}
	}

	var cfg struct{ services, volumes, quiet bool }
	config := &cobra.Command{Use: "config [--services|--volumes|-q]", Short: "check the Compose file and print it as Compose reads it", Args: cobra.NoArgs,
		RunE: run(func(c *composeCmd, _ []string) error {
			out := c.cmd.OutOrStdout()
			switch {
			case cfg.quiet:
				return nil
			case cfg.services:
				for _, s := range c.p.ServiceNames() {
					fmt.Fprintln(out, s)
				}
				return nil
			case cfg.volumes:
				for _, v := range c.p.VolumeNames() {
					fmt.Fprintln(out, v)
				}
				return nil
			}
			b, err := c.p.MarshalYAML()
			if err != nil {
				return err
			}
			_, err = out.Write(b)
			return err
		})}
	config.Flags().BoolVar(&cfg.services, "services", false, "print the services' names")
	config.Flags().BoolVar(&cfg.volumes, "volumes", false, "print the volumes' names")
	config.Flags().BoolVarP(&cfg.quiet, "quiet", "q", false, "only check the file")

	var uo upOpts
	up := &cobra.Command{Use: "up [-d] [--build] [SERVICE...]", Short: "make and start the services' containers (their networks and volumes first)",
		RunE: run(func(c *composeCmd, args []string) error { return c.up(uo, args) })}
	up.Flags().BoolVarP(&uo.detach, "detach", "d", false, "start them and return")
	up.Flags().BoolVar(&uo.build, "build", false, "build the images of services with a build section first")
	up.Flags().BoolVarP(&uo.watch, "watch", "w", false, "while attached, keep the containers in step with their sources as develop.watch says (lodge compose watch)")
	up.Flags().BoolVar(&uo.noBuild, "no-build", false, "do not build missing images")
	up.Flags().StringVar(&uo.pull, "pull", "missing", "pull images: missing, always or never")
	up.Flags().BoolVar(&uo.forceRecreate, "force-recreate", false, "make the containers again even if nothing changed")
	up.Flags().BoolVar(&uo.noRecreate, "no-recreate", false, "keep containers that exist even if their configuration changed")
	up.Flags().BoolVar(&uo.removeOrphans, "remove-orphans", false, "remove the project's containers of services the file no longer has")
	up.Flags().BoolVar(&uo.noDeps, "no-deps", false, "do not start the services the named ones depend on")
	up.Flags().BoolVar(&uo.abortOnExit, "abort-on-container-exit", false, "stop every container when one ends (not with -d)")
	up.Flags().BoolVar(&uo.wait, "wait", false, "return once every container runs, and is healthy where it has a health check (implies -d)")
	up.Flags().IntVar(&uo.waitTimeout, "wait-timeout", 0, "the most seconds --wait waits (0: no limit)")
	up.Flags().StringArrayVar(&uo.scale, "scale", nil, "SERVICE=N: run N containers of the service (over the file's scale or replicas)")
	up.Flags().StringVar(&uo.exitCodeFrom, "exit-code-from", "", "return this service's exit code (implies --abort-on-container-exit)")

	var do downOpts
	down := &cobra.Command{Use: "down [-v] [--rmi local|all] [--remove-orphans]", Short: "stop and remove the project's containers and networks", Args: cobra.NoArgs,
		RunE: run(func(c *composeCmd, _ []string) error { return c.down(do) })}
	down.Flags().BoolVarP(&do.volumes, "volumes", "v", false, "remove the project's named volumes and the containers' anonymous ones too")
	down.Flags().StringVar(&do.rmi, "rmi", "", "remove images too: local (those built for services) or all")
	down.Flags().BoolVar(&do.removeOrphans, "remove-orphans", false, "remove containers of services the file no longer has")
	down.Flags().IntVarP(&do.timeout, "timeout", "t", -1, "seconds to wait for each container to stop before SIGKILL")

	var po struct{ all, quiet, services bool }
	ps := &cobra.Command{Use: "ps [-a] [-q] [--services] [SERVICE...]", Short: "list the project's containers",
		RunE: run(func(c *composeCmd, args []string) error { return c.ps(po.all, po.quiet, po.services, args) })}
	ps.Flags().BoolVarP(&po.all, "all", "a", false, "stopped ones too")
	ps.Flags().BoolVarP(&po.quiet, "quiet", "q", false, "IDs only")
	ps.Flags().BoolVar(&po.services, "services", false, "the services with a running container")

	var lo composeLogOpts
	logs := &cobra.Command{Use: "logs [-f] [--tail N] [-t] [--no-log-prefix] [SERVICE...]", Short: "the output of the project's containers",
		RunE: run(func(c *composeCmd, args []string) error {
			ctrs, err := c.containers(args, true)
			if err != nil {
				return err
			}
			return c.followLogs(c.cmd.Context(), ctrs, lo, nil)
		})}
	logs.Flags().BoolVarP(&lo.follow, "follow", "f", false, "keep printing until the containers end")
	logs.Flags().StringVarP(&lo.tail, "tail", "n", "all", "lines from the end of each to show")
	logs.Flags().BoolVarP(&lo.timestamps, "timestamps", "t", false, "show when each line came")
	logs.Flags().BoolVar(&lo.noPrefix, "no-log-prefix", false, "do not prefix lines with the container's name")

	var bo struct{ noCache, pull bool }
	buildCmd := &cobra.Command{Use: "build [--no-cache] [--pull] [SERVICE...]", Short: "build the images of services with a build section",
		RunE: run(func(c *composeCmd, args []string) error {
			names, err := compose.Order(c.p, args)
			if err != nil {
				return err
			}
			for _, n := range names {
				if s := c.p.Services[n]; s.Build != nil {
					if err := c.build(s, bo.noCache, bo.pull); err != nil {
						return err
					}
				}
			}
			return nil
		})}
	buildCmd.Flags().BoolVar(&bo.noCache, "no-cache", false, "build every step again")
	buildCmd.Flags().BoolVar(&bo.pull, "pull", false, "pull the base images again")

	pull := &cobra.Command{Use: "pull [SERVICE...]", Short: "pull the services' images",
		RunE: run(func(c *composeCmd, args []string) error {
			names, err := compose.Order(c.p, args)
			if err != nil {
				return err
			}
			for _, n := range names {
				s := c.p.Services[n]
				if s.Image == "" || s.Build != nil && s.PullPolicy == types.PullPolicyBuild {
					continue
				}
				if code, err := c.lodge(nil, c.cmd.OutOrStdout(), c.cmd.ErrOrStderr(), "pull", s.Image); err != nil || code != 0 {
					return errors.Join(err, fmt.Errorf("service %s: pull %s failed", n, s.Image))
				}
			}
			return nil
		})}

	lifecycle := func(use, short, verb, done string) *cobra.Command {
		return &cobra.Command{Use: use + " [SERVICE...]", Short: short,
			RunE: run(func(c *composeCmd, args []string) error {
				ctrs, err := c.containers(args, false)
				if err != nil {
					return err
				}
				if verb == "stop" {
					return errors.Join(c.dependentsFirst(ctrs, func(r *ctrRecord) error {
						return errors.Join(c.preStop(r), c.step("Container", r.Name, done, verb, r.Name))
					})...)
				}
				var errs []error
				for _, r := range ctrs {
					if verb == "restart" {
						errs = append(errs, c.preStop(r))
					}
					err := c.step("Container", r.Name, done, verb, r.Name)
					if s, ok := c.p.Services[r.Labels[compose.LabelService]]; ok && err == nil && (verb == "start" || verb == "restart") {
						err = c.hooks(s, r.Name, s.PostStart, "post_start")
					}
					errs = append(errs, err)
				}
				return errors.Join(errs...)
			})}
	}
	exec := composeExecCommand(run)
	runCmd := composeRunCommand(run)
	var portIndex int
	var portProto string
	port := &cobra.Command{Use: "port [--index N] [--protocol tcp|udp] SERVICE PRIVATE_PORT", Short: "the host address a service's port is published on", Args: cobra.ExactArgs(2),
		RunE: run(func(c *composeCmd, args []string) error {
			ctrs, err := c.containers(args[:1], false)
			if err != nil {
				return err
			}
			for _, r := range ctrs {
				if r.Labels[compose.LabelNumber] != strconv.Itoa(portIndex) || r.Network == nil {
					continue
				}
				for _, p := range r.Network.Ports {
					if strconv.Itoa(p.ContainerPort) == args[1] && p.Protocol == portProto {
						ip := p.HostIP
						if ip == "" {
							ip = "0.0.0.0"
						}
						fmt.Fprintf(c.cmd.OutOrStdout(), "%s:%d\n", ip, p.HostPort)
						return nil
					}
				}
			}
			return fmt.Errorf("service %s: port %s/%s of container %d is not published", args[0], args[1], portProto, portIndex)
		})}
	port.Flags().IntVar(&portIndex, "index", 1, "which of the service's containers")
	port.Flags().StringVar(&portProto, "protocol", "tcp", "tcp or udp")
	ls := &cobra.Command{Use: "ls", Short: "list the projects that have containers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return composeProjects(cmd.OutOrStdout()) }}
	c.AddCommand(config, up, down, ps, logs, buildCmd, pull, exec, runCmd, ls, port, composeEventsCommand(run), composeWatchCommand(run),
		lifecycle("start", "start the services' existing containers", "start", "Started"),
		lifecycle("stop", "stop the services' containers", "stop", "Stopped"),
		lifecycle("restart", "restart the services' containers", "restart", "Restarted"))
	root.AddCommand(c)
}

// composeArgs lets -f name a Compose file before compose's subcommand,
// as docker compose's does, where `logs -f` (follow) comes after it: a
// -f there is --file.
func composeArgs(args []string) []string {
	if len(args) == 0 || args[0] != "compose" {
		return args
	}
	out := slices.Clone(args)
	for i := 1; i < len(out); i++ {
		a := out[i]
		switch {
		case a == "-f":
			out[i] = "--file"
			i++
		case strings.HasPrefix(a, "-f"):
			out[i] = "--file=" + strings.TrimPrefix(strings.TrimPrefix(a, "-f"), "=")
		case slices.Contains([]string{"--file", "-p", "--project-name", "--project-directory", "--env-file", "--profile"}, a):
			i++ // and its value
		case !strings.HasPrefix(a, "-"):
			return out // the subcommand
		}
	}
	return out
}

// lodge runs this executable with args; its exit code, and an error only
// when it could not run.
func (c *composeCmd) lodge(stdin io.Reader, stdout, stderr io.Writer, args ...string) (int, error) {
	cmd := exec.CommandContext(c.cmd.Context(), c.self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// step runs one lodge command for a resource and prints docker compose's
// progress line for it (" ✔ Container app-web-1  Started"); its error
// carries the command's own message.
func (c *composeCmd) step(kind, name, done string, args ...string) error {
	var errb bytes.Buffer
	code, err := c.lodge(nil, io.Discard, &errb, args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("%s %s: %s", strings.ToLower(kind), name, strings.TrimSpace(strings.TrimPrefix(errb.String(), "lodge: ")))
	}
	if err != nil {
		fmt.Fprintf(c.cmd.ErrOrStderr(), " ✘ %s %s  Error\n", kind, name)
		return err
	}
	fmt.Fprintf(c.cmd.ErrOrStderr(), " ✔ %s %s  %s\n", kind, name, done)
	return nil
}

// projectCtrs are every container of the project (oneoff ones too when
// asked), oldest first.
func projectCtrs(project string, oneoff bool) []*ctrRecord {
	all, _ := allCtrs()
	var out []*ctrRecord
	for _, r := range all {
		if r.Labels[compose.LabelProject] == project && (oneoff || r.Labels[compose.LabelOneoff] != "True") {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// containers are the project's containers of the services named (all
// when none), in the order the services start.
func (c *composeCmd) containers(services []string, oneoff bool) ([]*ctrRecord, error) {
	for _, s := range services {
		if _, ok := c.p.Services[s]; !ok {
			return nil, fmt.Errorf("no such service: %s", s)
		}
	}
	order, err := compose.Order(c.p, nil)
	if err != nil {
		return nil, err
	}
	rank := func(r *ctrRecord) int {
		if i := slices.Index(order, r.Labels[compose.LabelService]); i >= 0 {
			return i
		}
		return len(order)
	}
	var out []*ctrRecord
	for _, r := range projectCtrs(c.p.Name, oneoff) {
		if len(services) == 0 || slices.Contains(services, r.Labels[compose.LabelService]) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out, nil
}

// imageID is the ID of the image a name stands for ("" if lodge has none).
func (c *composeCmd) imageID(name string) string {
	im, err := c.a.images().Find(normalise(name))
	if err != nil {
		return ""
	}
	return im.ConfigDigest.Hex
}

// build builds a service's image with lodge build.
func (c *composeCmd) build(s types.ServiceConfig, noCache, pull bool) error {
	b := s.Build
	args := []string{"build", "-t", compose.Image(c.p, s)}
	var stdin io.Reader
	switch {
	case b.DockerfileInline != "":
		args, stdin = append(args, "-f", "-"), strings.NewReader(b.DockerfileInline)
	case b.Dockerfile != "":
		df := b.Dockerfile
		if !strings.HasPrefix(df, "/") {
			df = b.Context + "/" + df
		}
		args = append(args, "-f", df)
	}
	for _, k := range slices.Sorted(maps.Keys(b.Args)) {
		if v := b.Args[k]; v != nil {
			args = append(args, "--build-arg", k+"="+*v)
		}
	}
	if b.Target != "" {
		args = append(args, "--target", b.Target)
	}
	if b.Network != "" {
		args = append(args, "--network", b.Network)
	}
	for _, k := range slices.Sorted(maps.Keys(b.Labels)) {
		args = append(args, "--label", k+"="+b.Labels[k])
	}
	if noCache || b.NoCache {
		args = append(args, "--no-cache")
	}
	if pull || b.Pull {
		args = append(args, "--pull")
	}
	if strings.Contains(b.Context, "://") {
		return fmt.Errorf("service %s: build context %s: only local directories are offered", s.Name, b.Context)
	}
	fmt.Fprintf(c.cmd.ErrOrStderr(), " ⠿ Service %s  Building\n", s.Name)
	code, err := c.lodge(stdin, c.cmd.ErrOrStderr(), c.cmd.ErrOrStderr(), append(args, b.Context)...)
	if err == nil && code != 0 {
		err = fmt.Errorf("service %s: its build failed (exit %d)", s.Name, code)
	}
	return err
}

// ensureImage builds or pulls a service's image as the flags and its
// pull_policy ask.
func (c *composeCmd) ensureImage(s types.ServiceConfig, o upOpts) error {
	name := compose.Image(c.p, s)
	have := c.imageID(name) != ""
	policy := s.PullPolicy
	if o.pull != "missing" {
		policy = o.pull
	}
	if s.Build != nil && (o.build || policy == types.PullPolicyBuild || !have && !o.noBuild && (s.Image == "" || policy == "" || policy == types.PullPolicyMissing || policy == types.PullPolicyIfNotPresent)) {
		if o.noBuild && !have {
			return fmt.Errorf("service %s: its image %s is not built (--no-build)", s.Name, name)
		}
		return c.build(s, false, false)
	}
	switch {
	case policy == types.PullPolicyAlways, !have && policy != types.PullPolicyNever:
		var errb bytes.Buffer
		code, err := c.lodge(nil, io.Discard, io.MultiWriter(&errb, c.cmd.ErrOrStderr()), "pull", name)
		if err == nil && code != 0 {
			err = fmt.Errorf("service %s: pull %s: %s", s.Name, name, strings.TrimSpace(strings.TrimPrefix(errb.String(), "lodge: ")))
		}
		return err
	case !have:
		return fmt.Errorf("service %s: no image %s here, and its pull_policy is never", s.Name, name)
	}
	return nil
}

// composeProjects lists the projects that have containers, as docker
// compose ls: name, status (how many containers in each state), files.
func composeProjects(w io.Writer) error {
	all, err := allCtrs()
	if err != nil {
		return err
	}
	type row struct{ Name, Status, Files string }
	byName := map[string]*row{}
	counts := map[string]map[string]int{}
	for _, r := range all {
		p := r.Labels[compose.LabelProject]
		if p == "" {
			continue
		}
		if byName[p] == nil {
			byName[p] = &row{Name: p, Files: r.Labels[compose.LabelFiles]}
			counts[p] = map[string]int{}
		}
		st, _ := r.status()
		counts[p][st]++
	}
	var rows []row
	for _, n := range slices.Sorted(maps.Keys(byName)) {
		var parts []string
		for _, st := range slices.Sorted(maps.Keys(counts[n])) {
			parts = append(parts, fmt.Sprintf("%s(%d)", st, counts[n][st]))
		}
		byName[n].Status = strings.Join(parts, ", ")
		rows = append(rows, *byName[n])
	}
	return printList(w, rows, "table", "NAME\tSTATUS\tCONFIG FILES", func(r row) string { return r.Name + "\t" + r.Status + "\t" + r.Files })
}

// ps lists the project's containers as docker compose ps does.
func (c *composeCmd) ps(all, quiet, services bool, names []string) error {
	ctrs, err := c.containers(names, false)
	if err != nil {
		return err
	}
	w := c.cmd.OutOrStdout()
	type row struct {
		psRow
		Service string
	}
	var rows []row
	seen := map[string]bool{}
	for _, r := range ctrs {
		st, running := r.status()
		if !all && !running && !r.Restarting {
			continue
		}
		svc := r.Labels[compose.LabelService]
		switch {
		case quiet:
			fmt.Fprintln(w, r.ID)
		case services:
			if !seen[svc] {
				seen[svc] = true
				fmt.Fprintln(w, svc)
			}
		}
		rows = append(rows, row{psRowOf(r, st, running), svc})
	}
	if quiet || services {
		return nil
	}
	return printList(w, rows, "table", "NAME\tIMAGE\tCOMMAND\tSERVICE\tCREATED\tSTATUS\tPORTS", func(r row) string {
		return strings.Join([]string{r.Names, r.Image, r.Command, r.Service, r.Created, r.Status, r.Ports}, "\t")
	})
}
