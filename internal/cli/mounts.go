package cli

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/imagefs"
)

// mountReq is a mount the command line asks for, with -v or --mount, as
// docker reads them.
type mountReq struct {
	flag     string // the flag and its value, for errors
	kind     string // bind, volume or tmpfs
	src      string // bind: a host path; volume: a name ("": an anonymous one)
	dst      string
	subpath  string // volume: a directory in it to mount (volume-subpath)
	ro       bool
	nocopy   bool     // volume: do not fill it from the image
	create   bool     // bind: make a missing host directory (-v does, --mount refuses)
	tmpfsOps []string // tmpfs: its mount options
}

// parseVolume reads a -v value: HOST:CONTAINER[:OPTS],
// VOLUME:CONTAINER[:OPTS] or /CONTAINER (an anonymous volume). OPTS are
// docker's: ro or rw; nocopy (a volume); z, Z and the consistency
// modes, which mean nothing here; private or rprivate propagation.
func parseVolume(v string) (mountReq, error) {
	r := mountReq{flag: "-v " + v, kind: "volume"}
	if path.IsAbs(v) && !strings.Contains(v, ":") {
		r.dst = path.Clean(v)
		return r, nil
	}
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return r, fmt.Errorf("-v %q: want HOST:CONTAINER[:OPTIONS], VOLUME:CONTAINER[:OPTIONS] or /CONTAINER (an anonymous volume)", v)
	}
	r.src, r.dst = parts[0], parts[1]
	if len(parts) == 3 {
		for _, opt := range strings.Split(parts[2], ",") {
			switch opt {
			case "ro", "readonly":
				r.ro = true
			case "rw":
			case "nocopy":
				r.nocopy = true
			case "z", "Z", "consistent", "cached", "delegated":
				// SELinux labels (no SELinux policy is in force here) and
				// Docker Desktop's file sharing modes: docker ignores them
				// too where they mean nothing.
			default:
				if err := propagation(opt); err != nil {
					return r, fmt.Errorf("-v %q: %w", v, err)
				}
			}
		}
	}
	if filepath.IsAbs(r.src) {
		r.kind, r.create = "bind", true
	} else if !validVolumeName(r.src) {
		return r, fmt.Errorf("-v %q: %q is neither an absolute host path nor a volume name", v, r.src)
	}
	return r, r.check()
}

// propagation checks a bind propagation mode: a mount made on the host
// never reaches the guest (nor one made in it the host), so only the
// private ones are offered.
func propagation(mode string) error {
	switch mode {
	case "private", "rprivate":
		return nil
	case "shared", "rshared", "slave", "rslave":
		return fmt.Errorf("bind propagation %s: mounts do not propagate between the host and the container's VM (private and rprivate are offered)", mode)
	}
	return fmt.Errorf("option %q: want ro, rw, nocopy, z, Z, or a propagation (rprivate)", mode)
}

// parseMount reads a --mount value, docker's comma-separated KEY=VALUE
// list (a CSV record, so values may be quoted).
func parseMount(v string) (mountReq, error) {
	r := mountReq{flag: "--mount " + v, kind: "volume"}
	fields, err := csv.NewReader(strings.NewReader(v)).Read()
	if err != nil {
		return r, fmt.Errorf("--mount %q: %w", v, err)
	}
	var tmpfsSize, tmpfsMode string
	for _, f := range fields {
		key, val, hasVal := strings.Cut(f, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		flag := func() (bool, error) { // a bare key is true
			if !hasVal {
				return true, nil
			}
			b, err := strconv.ParseBool(val)
			if err != nil {
				return false, fmt.Errorf("--mount %q: %s=%s: want true or false", v, key, val)
			}
			return b, nil
		}
		switch key {
		case "type":
			r.kind = val
		case "source", "src":
			r.src = val
		case "target", "destination", "dst":
			r.dst = val
		case "readonly", "ro":
			if r.ro, err = flag(); err != nil {
				return r, err
			}
		case "volume-nocopy":
			if r.nocopy, err = flag(); err != nil {
				return r, err
			}
		case "volume-subpath":
			r.subpath = val
		case "volume-driver":
			if val != "local" {
				return r, fmt.Errorf("--mount %q: volume driver %q: lodge's volumes are local", v, val)
			}
		case "bind-propagation":
			if err := propagation(val); err != nil {
				return r, fmt.Errorf("--mount %q: %w", v, err)
			}
		case "consistency":
		case "tmpfs-size":
			tmpfsSize = val
		case "tmpfs-mode":
			tmpfsMode = val
		default:
			return r, fmt.Errorf("--mount %q: key %q is not offered (type, source, target, readonly, volume-nocopy, volume-subpath, bind-propagation, tmpfs-size, tmpfs-mode)", v, key)
		}
	}
	switch r.kind {
	case "bind":
		if !filepath.IsAbs(r.src) {
			return r, fmt.Errorf("--mount %q: a bind mount's source must be an absolute host path", v)
		}
	case "volume":
		if r.src != "" && !validVolumeName(r.src) {
			return r, fmt.Errorf("--mount %q: %q is not a volume name", v, r.src)
		}
	case "tmpfs":
		if r.src != "" {
			return r, fmt.Errorf("--mount %q: a tmpfs has no source", v)
		}
		r.tmpfsOps = []string{"nosuid", "nodev", "noexec", "mode=1777"}
		if tmpfsMode != "" {
			m, err := strconv.ParseUint(tmpfsMode, 8, 32)
			if err != nil || m > 0o7777 {
				return r, fmt.Errorf("--mount %q: tmpfs-mode %q: want an octal mode such as 1770", v, tmpfsMode)
			}
			r.tmpfsOps[3] = fmt.Sprintf("mode=%o", m)
		}
		if tmpfsSize != "" {
			n, err := parseBytes(tmpfsSize)
			if err != nil {
				return r, fmt.Errorf("--mount %q: tmpfs-size: %w", v, err)
			}
			r.tmpfsOps = append(r.tmpfsOps, fmt.Sprintf("size=%dk", (n+1023)/1024))
		}
	default:
		return r, fmt.Errorf("--mount %q: type %q: want bind, volume or tmpfs", v, r.kind)
	}
	if r.kind != "tmpfs" && (tmpfsSize != "" || tmpfsMode != "") {
		return r, fmt.Errorf("--mount %q: tmpfs options on a %s mount", v, r.kind)
	}
	return r, r.check()
}

func (r mountReq) check() error {
	if !path.IsAbs(r.dst) {
		return fmt.Errorf("%s: the container path must be absolute", r.flag)
	}
	if path.Clean(r.dst) == "/" {
		return fmt.Errorf("%s: a mount cannot replace the container's root", r.flag)
	}
	if r.kind != "volume" && (r.nocopy || r.subpath != "") {
		return fmt.Errorf("%s: nocopy and volume-subpath are a volume's", r.flag)
	}
	if r.subpath != "" && (path.IsAbs(r.subpath) || !filepath.IsLocal(r.subpath)) {
		return fmt.Errorf("%s: volume-subpath %q must be a path inside the volume", r.flag, r.subpath)
	}
	return nil
}

// mountPoint is one of a container's mounts that -v, --mount,
// --volumes-from or its image's VOLUMEs made, as docker's inspect shows it
// (and --volumes-from takes it again).
type mountPoint struct {
	Type        string `json:"Type"`           // bind, volume or tmpfs
	Name        string `json:"Name,omitempty"` // a volume's
	Source      string `json:"Source"`
	Destination string `json:"Destination"`
	Mode        string `json:"Mode"`
	RW          bool   `json:"RW"`
	Propagation string `json:"Propagation"`
	Subpath     string `json:"Subpath,omitempty"` // a volume's volume-subpath
}

// mounted is what ctrMounts made: the volumes mounted (and, of them, the
// anonymous ones it made) and the mount points.
type mounted struct {
	volumes, anon []string
	points        []mountPoint
}

// ctrMounts makes the container's mounts of -v and --mount, those of
// the containers --volumes-from names (where -v and --mount put nothing),
// and anonymous volumes at the image's VOLUMEs none of them covers. A
// volume that has nothing in it takes what the image has at its mount
// point, as docker fills it, unless nocopy.
func ctrMounts(spec *specs.Spec, imageVolumes []string, lays []string, o runOpts, warn io.Writer) (m mounted, err error) {
	var reqs []mountReq
	for _, v := range o.volumes {
		r, err := parseVolume(v)
		if err != nil {
			return m, err
		}
		reqs = append(reqs, r)
	}
	for _, v := range o.mounts {
		r, err := parseMount(v)
		if err != nil {
			return m, err
		}
		reqs = append(reqs, r)
	}
	taken := map[string]string{}
	for _, r := range reqs {
		d := path.Clean(r.dst)
		if prev, ok := taken[d]; ok {
			return m, fmt.Errorf("%s: %s is mounted already (%s)", r.flag, d, prev)
		}
		taken[d] = r.flag
	}
	for _, v := range o.volumesFrom {
		from, err := volumesFrom(v)
		if err != nil {
			return m, err
		}
		for _, r := range from {
			if d := path.Clean(r.dst); taken[d] == "" {
				taken[d] = r.flag
				reqs = append(reqs, r)
			}
		}
	}
	for _, d := range imageVolumes {
		if path.IsAbs(d) && taken[path.Clean(d)] == "" {
			reqs = append(reqs, mountReq{flag: "the image's VOLUME " + d, kind: "volume", dst: path.Clean(d)})
		}
	}
	var files *imagefs.Union
	defer func() {
		if files != nil {
			files.Close()
		}
	}()
	for _, r := range reqs {
		opts := []string{"rbind", "rprivate"}
		if r.ro {
			opts = append(opts, "ro")
		}
		point := mountPoint{Type: r.kind, Destination: path.Clean(r.dst), Mode: rwOpt(r.ro), RW: !r.ro, Propagation: "rprivate"}
		switch r.kind {
		case "tmpfs":
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: path.Clean(r.dst), Type: "tmpfs", Source: "tmpfs",
				Options: append([]string{rwOpt(r.ro)}, r.tmpfsOps...)})
			point.Propagation = ""
			m.points = append(m.points, point)
			continue
		case "bind":
			if err := bindSource(r); err != nil {
				return m, err
			}
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: r.dst, Type: "bind", Source: r.src, Options: opts})
			point.Source = r.src
			m.points = append(m.points, point)
			continue
		}
		name, anonymous := r.src, r.src == ""
		if anonymous {
			name = "anon-" + newID()[:24]
		}
		vol, err := ensureVolume(name, anonymous)
		if err != nil {
			return m, fmt.Errorf("%s: %w", r.flag, err)
		}
		m.volumes = append(m.volumes, vol.Name)
		if anonymous {
			m.anon = append(m.anon, vol.Name)
		}
		src := vol.dataDir()
		if r.subpath != "" {
			if src, err = subpathOf(vol, r.subpath); err != nil {
				return m, fmt.Errorf("%s: %w", r.flag, err)
			}
		} else if !r.nocopy {
			if files == nil {
				if files, err = imagefs.Open(lays); err != nil {
					return m, err
				}
			}
			if err := fillVolume(vol, files, r.dst, warn); err != nil {
				return m, fmt.Errorf("%s: %w", r.flag, err)
			}
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: r.dst, Type: "bind", Source: src, Options: opts})
		point.Name, point.Source, point.Subpath = vol.Name, src, r.subpath
		m.points = append(m.points, point)
	}
	return m, nil
}

// volumesFrom reads a --volumes-from value, CONTAINER[:ro|:rw], into the
// container's volume and bind mounts (not its tmpfs ones), each read-only
// or not as there unless the suffix says.
func volumesFrom(v string) ([]mountReq, error) {
	name, mode, _ := strings.Cut(v, ":")
	if mode != "" && mode != "ro" && mode != "rw" {
		return nil, fmt.Errorf("--volumes-from %s: want CONTAINER[:ro|:rw]", v)
	}
	r, err := findCtr(name)
	if err != nil {
		return nil, fmt.Errorf("--volumes-from %s: %w", v, err)
	}
	points := r.Mounts
	if points == nil { // a record from before Lodge kept its mounts
		points = volumeMountsOf(r)
	}
	var out []mountReq
	for _, p := range points {
		req := mountReq{flag: "--volumes-from " + v, kind: p.Type, dst: p.Destination, ro: !p.RW, nocopy: true, subpath: p.Subpath}
		switch {
		case p.Type == "volume":
			req.src = p.Name
		case p.Type == "bind":
			req.src, req.nocopy = p.Source, false
		default:
			continue
		}
		if mode != "" {
			req.ro = mode == "ro"
		}
		out = append(out, req)
	}
	return out, nil
}

func rwOpt(ro bool) string {
	if ro {
		return "ro"
	}
	return "rw"
}

// bindSource checks a bind mount's host path; -v makes a missing one a
// directory, as docker's -v does.
func bindSource(r mountReq) error {
	_, err := os.Stat(r.src)
	if errors.Is(err, os.ErrNotExist) && r.create {
		err = os.MkdirAll(r.src, 0o755)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", r.flag, err)
	}
	return nil
}

// subpathOf is directory sub of the volume, reached without following a
// link: what a container wrote into the volume must not point a later
// mount at the host's files.
func subpathOf(v volume, sub string) (string, error) {
	p := v.dataDir()
	for _, c := range strings.Split(filepath.Clean(sub), string(filepath.Separator)) {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return "", fmt.Errorf("volume-subpath %s: %w", sub, err)
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("volume-subpath %s: %s is not a directory of the volume (a link is not followed)", sub, c)
		}
	}
	return p, nil
}

// fillVolume gives a volume with nothing in it what the image has at
// dst, under the volume's lock so that two containers starting on a new
// volume fill it once. A fill that fails is taken back.
func fillVolume(v volume, files *imagefs.Union, dst string, warn io.Writer) error {
	unlock, err := filelock.Lock(context.Background(), filepath.Join(volumesDir, v.Name, "fill.lock"), true)
	if err != nil {
		return err
	}
	defer unlock()
	copied, skipped, err := files.CopyInto(dst, v.dataDir())
	if warn == nil {
		warn = os.Stderr
	}
	for _, s := range skipped {
		fmt.Fprintf(warn, "lodge: volume %s: the image's %s is a device node, fifo or socket: not copied to the host\n", v.Name, s)
	}
	if err != nil && copied {
		ents, _ := os.ReadDir(v.dataDir())
		for _, e := range ents {
			os.RemoveAll(filepath.Join(v.dataDir(), e.Name()))
		}
	}
	return err
}

// volumeMountsOf are a container's volume mounts, from its bundle's
// mounts (what a record from before Lodge kept its mounts still has).
func volumeMountsOf(r *ctrRecord) []mountPoint {
	spec, err := readBundleSpec(bundleDir(r.ID))
	if err != nil {
		return nil
	}
	var out []mountPoint
	for _, m := range spec.Mounts {
		name := filepath.Base(filepath.Dir(m.Source))
		if m.Type != "bind" || m.Source != (volume{Name: name}).dataDir() || !slices.Contains(r.Volumes, name) {
			continue
		}
		ro := slices.Contains(m.Options, "ro")
		out = append(out, mountPoint{Type: "volume", Name: name, Source: m.Source, Destination: path.Clean(m.Destination),
			Mode: rwOpt(ro), RW: !ro, Propagation: "rprivate"})
	}
	return out
}
