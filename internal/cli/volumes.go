package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
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
	create := &cobra.Command{Use: "create [NAME]", Short: "create a named volume", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "v" + newID()[:16]
			if len(args) == 1 {
				name = args[0]
			}
			v, err := ensureVolume(name, false)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), v.Name)
			return nil
		}}
	var quiet bool
	var format string
	ls := &cobra.Command{Use: "ls [-q] [--format table|json]", Short: "list volumes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			vs, err := listVolumes()
			if err != nil {
				return err
			}
			return printVolumes(cmd.OutOrStdout(), vs, quiet, format)
		}}
	ls.Flags().BoolVarP(&quiet, "quiet", "q", false, "names only")
	ls.Flags().StringVar(&format, "format", "table", "table or json")
	var force bool
	rm := &cobra.Command{Use: "rm [-f] VOLUME...", Short: "remove volumes (refused while a container uses one)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, n := range args {
				if err := removeVolume(n, force); err != nil {
					errs = append(errs, err)
					continue
				}
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
