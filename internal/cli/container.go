package cli

// `lodge container ...` (docker's management command group), `container
// prune`, and ps's filters.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

// ctrFilters is ps's --filter KEY=VALUE: values of one key are
// alternatives, different keys must all match, as docker's.
type ctrFilters map[string][]string

func parseFilters(args []string) (ctrFilters, error) {
	f := ctrFilters{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("--filter %q: want KEY=VALUE", a)
		case k == "status" && !slices.Contains([]string{"created", "restarting", "running", "paused", "exited"}, v):
			return nil, fmt.Errorf("--filter %q: a status is created, restarting, running, paused or exited", a)
		case k == "exited":
			if _, err := strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("--filter %q: an exit code is a number", a)
			}
		case k == "health" && !slices.Contains([]string{"starting", "healthy", "unhealthy", "none"}, v):
			return nil, fmt.Errorf("--filter %q: a health is starting, healthy, unhealthy or none", a)
		case k != "id" && k != "name" && k != "status" && k != "ancestor" && k != "label" && k != "health":
			return nil, fmt.Errorf("--filter %q: filters are id, name, status, ancestor, exited, label and health", a)
		}
		f[k] = append(f[k], v)
	}
	return f, nil
}

// match says whether r, whose state is st, passes every filter.
func (f ctrFilters) match(r *ctrRecord, st string) bool {
	for k, vs := range f {
		if !slices.ContainsFunc(vs, func(v string) bool {
			switch k {
			case "id":
				return strings.HasPrefix(r.ID, v)
			case "name":
				return strings.Contains(r.Name, v)
			case "status":
				return st == v
			case "ancestor":
				return normalise(v) == r.Image || displayName(r.Image) == v || looksLikeID(v) && strings.HasPrefix(r.ImageID, strings.TrimPrefix(v, "sha256:"))
			case "exited":
				return st == "exited" && strconv.Itoa(r.exitCode()) == v
			case "health":
				if h := r.health(); h != nil {
					return h.Status == v
				}
				return v == "none"
			case "label": // KEY, or KEY=VALUE
				lk, lv, withValue := strings.Cut(v, "=")
				have, ok := r.Labels[lk]
				return ok && (!withValue || have == lv)
			}
			return false
		}) {
			return false
		}
	}
	return true
}

// pruneCtrs removes every container that is not running (ended or only
// created) and returns their IDs.
func pruneCtrs(a *app) ([]string, error) {
	all, err := allCtrs()
	if err != nil {
		return nil, err
	}
	var gone []string
	var errs []error
	for _, r := range all {
		if st, running := r.status(); running || st == "restarting" {
			continue
		}
		if err := removeCtr(a, r, false); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, r.ID)
	}
	return gone, errors.Join(errs...)
}

// confirm asks a yes/no question on out and reads the answer from in.
func confirm(in io.Reader, out io.Writer, question string) bool {
	fmt.Fprintf(out, "%s [y/N] ", question)
	if in == nil {
		return false
	}
	line, _ := bufio.NewReader(in).ReadString('\n')
	ans := strings.ToLower(strings.TrimSpace(line))
	return ans == "y" || ans == "yes"
}

// addContainerGroup adds `lodge container`: prune, and the container
// commands under docker's management names (container ls, rm, ...). It
// runs after they are added.
func addContainerGroup(root *cobra.Command, a *app) {
	var force bool
	prune := &cobra.Command{
		Use:   "prune [-f]",
		Short: "remove every container that is not running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && !confirm(a.env.In, cmd.ErrOrStderr(), "This removes every container of lodge that is not running. Go on?") {
				return nil
			}
			gone, err := pruneCtrs(a)
			fmt.Fprintln(cmd.OutOrStdout(), "Deleted Containers:")
			for _, id := range gone {
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return err
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	group := &cobra.Command{Use: "container", Short: "manage containers"}
	group.AddCommand(prune)
	for _, c := range root.Commands() {
		switch c.Name() {
		case "attach", "cp", "inspect", "kill", "logs", "pause", "port", "rename", "restart",
			"rm", "start", "stats", "stop", "top", "unpause", "update", "wait", "commit", "diff", "export", "watch":
			group.AddCommand(cloneCmd(c))
		case "create", "exec", "run":
			d := cloneCmd(c)
			d.Flags().SetInterspersed(false) // what follows the image or container is the command's
			group.AddCommand(d)
		case "ps":
			ls := cloneCmd(c)
			ls.Use = "ls" + strings.TrimPrefix(c.Use, "ps")
			ls.Aliases = []string{"ps", "list"}
			group.AddCommand(ls)
		}
	}
	root.AddCommand(group)
}
