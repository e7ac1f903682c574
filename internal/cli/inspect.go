package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// docker inspect of any object: a container, an image, a network or a
// volume, tried in that order (as docker's CLI tries them) unless --type
// names one.

// inspector describes the object a name names, or says there is none.
type inspector func(a *app, name string) (any, error)

var inspectors = []struct {
	kind string
	of   inspector
}{
	{"container", func(_ *app, n string) (any, error) {
		r, err := findCtr(n)
		if err != nil {
			return nil, err
		}
		return inspectCtr(r), nil
	}},
	{"image", func(a *app, n string) (any, error) { return inspectImage(a.images(), n) }},
	{"network", func(_ *app, n string) (any, error) { return inspectNetwork(n) }},
	{"volume", func(_ *app, n string) (any, error) { return inspectVolume(n) }},
}

// inspectAny describes what name names, of kind (any: "").
func (a *app) inspectAny(kind, name string) (any, error) {
	for _, in := range inspectors {
		if kind != "" && in.kind != kind {
			continue
		}
		if d, err := in.of(a, name); err == nil || kind != "" {
			return d, err
		}
	}
	if kind == "" {
		return nil, fmt.Errorf("no such object: %s", name)
	}
	return nil, fmt.Errorf("--type %s: want container, image, network or volume", kind)
}

// inspectEach prints what each name names (of kind), and the names that
// name nothing.
func inspectEach(cmd *cobra.Command, names []string, format string, of func(string) (any, error)) error {
	out := []any{}
	var errs []error
	for _, n := range names {
		d, err := of(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, d)
	}
	return errors.Join(printInspect(cmd.OutOrStdout(), out, format), errors.Join(errs...))
}

func inspectVolume(n string) (any, error) {
	if !volumeExists(n) {
		return nil, fmt.Errorf("no such volume: %s", n)
	}
	v, _ := ensureVolume(n, false)
	labels := v.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return map[string]any{"Name": v.Name, "Driver": "local", "Mountpoint": v.dataDir(),
		"CreatedAt": v.Created, "Scope": "local", "Labels": labels, "UsedBy": volumeUsers(v.Name)}, nil
}

func inspectNetwork(n string) (any, error) {
	if n == "bridge" {
		n = bridgeNetwork
	}
	conf, err := os.ReadFile(networkPath(n))
	if err != nil || !validName(n) {
		return nil, fmt.Errorf("no such network: %s", n)
	}
	var list struct {
		Plugins []struct {
			Bridge string `json:"bridge"`
			IPAM   struct {
				Ranges [][]map[string]string `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	json.Unmarshal(conf, &list)
	var pools []map[string]string
	bridge := ""
	if len(list.Plugins) > 0 {
		bridge = list.Plugins[0].Bridge
		for _, r := range list.Plugins[0].IPAM.Ranges {
			for _, p := range r {
				pools = append(pools, map[string]string{"Subnet": p["subnet"], "Gateway": p["gateway"]})
			}
		}
	}
	members := map[string]any{}
	for _, m := range networkMembers(n) {
		members[m.rec.ID] = map[string]any{"Name": m.rec.Name, "IPv4Address": m.ip, "Aliases": m.rec.aliases()}
	}
	pol, opts := confRules(conf), map[string]string{"bridge": bridge}
	if pol.noICC {
		opts[iccOption] = "false"
	}
	return map[string]any{"Name": n, "Driver": "bridge", "Scope": "local", "Internal": pol.internal, "IPAM": map[string]any{"Driver": "host-local", "Config": pools},
		"Options": opts, "ConfigFile": networkPath(n), "Containers": members}, nil
}
