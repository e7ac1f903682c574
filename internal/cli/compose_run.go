package cli

// lodge compose exec and run: a command in a service's container, and a
// one-off container of a service.

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/lodgeruntime/lodge/internal/compose"
)

// composeExecCommand is lodge compose exec: a command in a service's
// running container, with a terminal where stdin is one (as docker
// compose exec).
func composeExecCommand(run func(func(*composeCmd, []string) error) func(*cobra.Command, []string) error) *cobra.Command {
	var o struct {
		detach, noTTY bool
		user, workdir string
		env           []string
		index         int
	}
	cmd := &cobra.Command{Use: "exec [-d] [-T] [-e K=V] [-u USER] [-w DIR] [--index N] SERVICE COMMAND [ARG...]",
		Short: "run a command in a service's running container", Args: cobra.MinimumNArgs(2),
		RunE: run(func(c *composeCmd, args []string) error {
			ctrs, err := c.containers(args[:1], false)
			if err != nil {
				return err
			}
			var target *ctrRecord
			for _, r := range ctrs {
				if r.Labels[compose.LabelNumber] == strconv.Itoa(o.index) {
					target = r
				}
			}
			if target == nil {
				return fmt.Errorf("service %s has no container %d (lodge compose up %s)", args[0], o.index, args[0])
			}
			a := append([]string{"exec"}, stdioFlags(o.detach, o.noTTY)...)
			for _, e := range o.env {
				a = append(a, "-e", e)
			}
			if o.user != "" {
				a = append(a, "-u", o.user)
			}
			if o.workdir != "" {
				a = append(a, "-w", o.workdir)
			}
			return c.passthrough(append(append(a, target.Name), args[1:]...))
		})}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&o.detach, "detach", "d", false, "run it in the background")
	f.BoolVarP(&o.noTTY, "no-TTY", "T", false, "no terminal, even where stdin is one")
	f.StringVarP(&o.user, "user", "u", "", "the user to run it as")
	f.StringVarP(&o.workdir, "workdir", "w", "", "the directory to run it in")
	f.StringArrayVarP(&o.env, "env", "e", nil, "an environment variable: K=V")
	f.IntVar(&o.index, "index", 1, "which of the service's containers")
	return cmd
}

// composeRunCommand is lodge compose run: a one-off container of a
// service (its dependencies started first), in the foreground unless -d;
// the service's ports are not published unless --service-ports.
func composeRunCommand(run func(func(*composeCmd, []string) error) func(*cobra.Command, []string) error) *cobra.Command {
	var o struct {
		rm, detach, noDeps, noTTY, servicePorts bool
		name, user, workdir, entrypoint         string
		env                                     []string
	}
	cmd := &cobra.Command{Use: "run [--rm] [-d] [--name NAME] [-e K=V] [-u USER] [-w DIR] [--entrypoint CMD] [--no-deps] [--service-ports] SERVICE [COMMAND...]",
		Short: "run a one-off command in a new container of a service", Args: cobra.MinimumNArgs(1),
		RunE: run(func(c *composeCmd, args []string) error {
			s, ok := c.p.Services[args[0]]
			if !ok {
				return fmt.Errorf("no such service: %s", args[0])
			}
			if !o.noDeps && len(s.DependsOn) > 0 {
				if err := c.up(upOpts{detach: true, pull: "missing"}, slices.Sorted(maps.Keys(s.DependsOn))); err != nil {
					return err
				}
				if err := c.waitDeps(s); err != nil {
					return err
				}
			}
			if err := c.ensureNetworks(args[:1]); err != nil {
				return err
			}
			if err := c.ensureVolumes(args[:1]); err != nil {
				return err
			}
			if err := c.ensureImage(s, upOpts{pull: "missing"}); err != nil {
				return err
			}
			if !o.servicePorts {
				s.Ports = nil
			}
			if cmd := c.cmd.Flags(); cmd.Changed("entrypoint") {
				s.Entrypoint = types.ShellCommand(strings.Fields(o.entrypoint))
			}
			if o.user != "" {
				s.User = o.user
			}
			if o.workdir != "" {
				s.WorkingDir = o.workdir
			}
			for _, e := range o.env {
				k, v, _ := strings.Cut(e, "=")
				if s.Environment == nil {
					s.Environment = types.MappingWithEquals{}
				}
				s.Environment[k] = &v
			}
			name := o.name
			if name == "" {
				name = fmt.Sprintf("%s-%s-run-%s", c.p.Name, s.Name, newID()[:12])
			}
			ct := compose.Container{Name: name, Number: 1, Detach: o.detach, Oneoff: true,
				Hash: compose.Hash(s, c.imageID(compose.Image(c.p, s)))}
			if len(args) > 1 {
				ct.Command = args[1:]
			}
			ra, warnings, err := compose.RunArgs(c.p, s, ct)
			if err != nil {
				return err
			}
			for _, w := range warnings {
				c.warn("%s", w)
			}
			a := []string{"run"}
			if o.rm {
				a = append(a, "--rm")
			}
			if !o.detach {
				a = append(a, stdioFlags(false, o.noTTY)...)
			}
			return c.passthrough(append(a, ra...))
		})}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVar(&o.rm, "rm", false, "remove the container when it ends")
	f.BoolVarP(&o.detach, "detach", "d", false, "run it in the background and print its ID")
	f.BoolVar(&o.noDeps, "no-deps", false, "do not start the services it depends on")
	f.BoolVarP(&o.noTTY, "no-TTY", "T", false, "no terminal, even where stdin is one")
	f.BoolVar(&o.servicePorts, "service-ports", false, "publish the service's ports")
	f.StringVar(&o.name, "name", "", "the container's name")
	f.StringVarP(&o.user, "user", "u", "", "the user to run it as")
	f.StringVarP(&o.workdir, "workdir", "w", "", "the directory to run it in")
	f.StringVar(&o.entrypoint, "entrypoint", "", "replace the image's entrypoint")
	f.StringArrayVarP(&o.env, "env", "e", nil, "an environment variable: K=V")
	return cmd
}

// stdioFlags are exec's and run's: -d, or -i and, where stdin is a
// terminal and -T was not given, -t (as docker compose gives them).
func stdioFlags(detach, noTTY bool) []string {
	switch {
	case detach:
		return []string{"-d"}
	case !noTTY && term.IsTerminal(int(os.Stdin.Fd())):
		return []string{"-i", "-t"}
	}
	return []string{"-i"}
}

// passthrough runs lodge with this command's stdio; its exit code is
// this command's.
func (c *composeCmd) passthrough(args []string) error {
	code, err := c.lodge(os.Stdin, c.cmd.OutOrStdout(), c.cmd.ErrOrStderr(), args...)
	if err == nil && code != 0 {
		err = exitError{code: code}
	}
	return err
}
