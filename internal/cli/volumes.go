package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/lodgeruntime/lodge/internal/state"
)

// volumesDir holds named volumes (<name>/_data, <name>/volume.json): the
// config's images.volumes_dir, set before any command runs.
var volumesDir = "/var/lib/lodge/volumes"

// volume is a named volume's record.
type volume struct {
	Name      string    `json:"Name"`
	Created   time.Time `json:"CreatedAt"`
	Anonymous bool      `json:"Anonymous,omitempty"`
	// Labels are volume create --label's.
	Labels map[string]string `json:"Labels,omitempty"`
}

func (v volume) dataDir() string { return filepath.Join(volumesDir, v.Name, "_data") }

func validVolumeName(s string) bool { return len(s) >= 2 && validName(s) }

// ensureVolume returns the named volume, creating it if missing.
func ensureVolume(name string, anonymous bool) (volume, error) {
	if !validVolumeName(name) {
		return volume{}, fmt.Errorf("invalid volume name %q: use letters, digits, '_', '.', '-' (two characters at least)", name)
	}
	var v volume
	meta := filepath.Join(volumesDir, name, "volume.json")
	if err := state.Read(meta, &v); err == nil {
		return v, nil
	}
	v = volume{Name: name, Created: time.Now().UTC(), Anonymous: anonymous}
	if err := volumesRoot(); err != nil {
		return v, err
	}
	if err := os.MkdirAll(v.dataDir(), 0o755); err != nil {
		return v, err
	}
	return v, state.Write(meta, v)
}

// volumesRoot makes volumesDir root's alone (0700), as docker keeps
// /var/lib/docker: what a container writes into a volume is the host's
// file, and a set-user-ID file a hostile container (root in its guest)
// made there must not be a host user's to run. A directory made wider
// before is narrowed.
func volumesRoot() error {
	if err := os.MkdirAll(volumesDir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(volumesDir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return os.Chmod(volumesDir, 0o700)
	}
	return nil
}

func listVolumes() ([]volume, error) {
	ents, err := os.ReadDir(volumesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []volume
	for _, e := range ents {
		var v volume
		if state.Read(filepath.Join(volumesDir, e.Name(), "volume.json"), &v) == nil {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// volumeUsers are the containers (any state) that mount the volume.
func volumeUsers(name string) []string {
	all, _ := allCtrs()
	var out []string
	for _, r := range all {
		for _, v := range r.Volumes {
			if v == name {
				out = append(out, r.Name)
			}
		}
	}
	return out
}

func removeVolume(name string, force bool) error {
	if users := volumeUsers(name); len(users) > 0 && !force {
		return fmt.Errorf("volume %s is in use by %s (remove them first)", name, strings.Join(users, ", "))
	}
	if _, err := os.Stat(filepath.Join(volumesDir, name, "volume.json")); err != nil {
		return fmt.Errorf("no such volume: %s", name)
	}
	return os.RemoveAll(filepath.Join(volumesDir, name))
}

func addVolumeCommands(root *cobra.Command) {
	vol := &cobra.Command{Use: "volume", Short: "manage named volumes"}
	var labels []string
	var driver string
	create := &cobra.Command{Use: "create [-l KEY=VALUE]... [NAME]", Short: "create a named volume", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if driver != "local" {
				return fmt.Errorf("--driver %q: lodge's volumes are local", driver)
			}
			lm, err := labelMap(labels)
			if err != nil {
				return err
			}
			name := "v" + newID()[:16]
			if len(args) == 1 {
				name = args[0]
			}
			v, err := ensureVolume(name, false)
			if err != nil {
				return err
			}
			if len(lm) > 0 {
				if v, err = labelVolume(v, lm); err != nil {
					return err
				}
			}
			emit("volume", "create", v.Name, map[string]string{"driver": "local"})
			fmt.Fprintln(cmd.OutOrStdout(), v.Name)
			return nil
		}}
	create.Flags().StringArrayVarP(&labels, "label", "l", nil, "a label: KEY=VALUE")
	create.Flags().StringVarP(&driver, "driver", "d", "local", "the volume driver (local, the only one)")
	var quiet bool
	var format string
	var filters []string
	ls := &cobra.Command{Use: "ls [-q] [-f KEY=VALUE]... [--format table|json]", Short: "list volumes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keep, err := volumeFilter(filters)
			if err != nil {
				return err
			}
			vs, err := listVolumes()
			if err != nil {
				return err
			}
			return printVolumes(cmd.OutOrStdout(), slices.DeleteFunc(vs, func(v volume) bool { return !keep(v) }), quiet, format)
		}}
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "names only")
	ls.Flags().StringVar(&format, "format", "table", "table or json")
	ls.Flags().StringArrayVarP(&filters, "filter", "f", nil, "only volumes with dangling=true|false (no container uses it), name=PART, label=KEY[=VALUE] or driver=local")
	var force bool
	rm := &cobra.Command{Use: "rm [-f] VOLUME...", Short: "remove volumes (refused while a container uses one)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, n := range args {
				if err := removeVolume(n, force); err != nil {
					errs = append(errs, err)
					continue
				}
				emit("volume", "destroy", n, map[string]string{"driver": "local"})
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return errors.Join(errs...)
		}}
	rm.Flags().BoolVarP(&force, "force", "f", false, "remove even if a container uses it")
	vol.AddCommand(create, ls, rm)
	root.AddCommand(vol)
}

func printVolumes(w io.Writer, vs []volume, quiet bool, format string) error {
	if quiet {
		for _, v := range vs {
			fmt.Fprintln(w, v.Name)
		}
		return nil
	}
	type row struct {
		Driver, Name, Mountpoint string
		CreatedAt                time.Time
	}
	var rows []row
	for _, v := range vs {
		rows = append(rows, row{"local", v.Name, v.dataDir(), v.Created})
	}
	return printList(w, rows, format, "DRIVER\tVOLUME NAME", func(r row) string { return r.Driver + "\t" + r.Name })
}

// labelVolume gives a volume made just now its labels; one that has
// other labels is refused, as docker refuses it.
func labelVolume(v volume, labels map[string]string) (volume, error) {
	if v.Labels != nil {
		if !maps.Equal(v.Labels, labels) {
			return v, fmt.Errorf("volume %s exists with other labels", v.Name)
		}
		return v, nil
	}
	v.Labels = labels
	return v, state.Write(filepath.Join(volumesDir, v.Name, "volume.json"), v)
}

// volumeFilter reads volume ls --filter values (each key's values
// or-ed, the keys and-ed, as docker's).
func volumeFilter(filters []string) (func(volume) bool, error) {
	by := map[string][]string{}
	for _, f := range filters {
		k, v, ok := strings.Cut(f, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("--filter %q: want KEY=VALUE", f)
		case k == "dangling":
			if _, err := strconv.ParseBool(v); err != nil {
				return nil, fmt.Errorf("--filter %s: want true or false", f)
			}
		case k != "name" && k != "label" && k != "driver":
			return nil, fmt.Errorf("--filter %q: want dangling, name, label or driver", f)
		}
		by[k] = append(by[k], v)
	}
	var users map[string]bool
	return func(vol volume) bool {
		for k, vals := range by {
			if !slices.ContainsFunc(vals, func(v string) bool {
				switch k {
				case "dangling":
					if users == nil {
						users = map[string]bool{}
						all, _ := allCtrs()
						for _, r := range all {
							for _, n := range r.Volumes {
								users[n] = true
							}
						}
					}
					want, _ := strconv.ParseBool(v)
					return want == !users[vol.Name]
				case "name":
					return strings.Contains(vol.Name, v)
				case "driver":
					return v == "local"
				}
				lk, lv, hasValue := strings.Cut(v, "=")
				got, ok := vol.Labels[lk]
				return ok && (!hasValue || got == lv)
			}) {
				return false
			}
		}
		return true
	}, nil
}
