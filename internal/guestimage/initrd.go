package guestimage

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Entry is one file of the initrd, as a manifest line.
type Entry struct {
	Path string
	Mode fs.FileMode
	Size int64
	Dev  [2]int // major, minor for device nodes
	src  string // host file holding the contents
	data []byte // contents when generated
}

func (e Entry) String() string {
	if e.Mode&fs.ModeCharDevice != 0 {
		return fmt.Sprintf("%s %#o char %d:%d", e.Path, e.Mode.Perm(), e.Dev[0], e.Dev[1])
	}
	if e.Mode.IsDir() {
		return fmt.Sprintf("%s %#o dir", e.Path, e.Mode.Perm())
	}
	return fmt.Sprintf("%s %#o %d bytes", e.Path, e.Mode.Perm(), e.Size)
}

// InitrdSpec says what goes into the initrd.
type InitrdSpec struct {
	Agent   string   // path of the static lodge-agent binary
	Init    string   // path of the static lodge-init binary; "" for none
	Modules []Module // in load order
	// OnDemand are loaded by the agent as the guest's modprobe; each entry
	// lists a requested module after the on-demand modules it needs.
	OnDemand [][]Module
}

// InitPath is where the initrd keeps lodge-init (boot.InitPath in the
// guest).
const InitPath = "lodge/lodge-init"

// ModulesDir is where the initrd keeps modules; the agent's boot code reads
// /lodge/modules.list (see internal/guest/boot).
const ModulesDir = "lodge/modules"

// OnDemandDir holds the on-demand modules; lodge/modprobe.list maps each
// name and alias to the files to load, in order ("name path path...").
const OnDemandDir = "lodge/ondemand"

// Manifest lists the initrd's entries in archive order.
func Manifest(spec InitrdSpec) ([]Entry, error) {
	st, err := os.Stat(spec.Agent)
	if err != nil {
		return nil, fmt.Errorf("lodge-agent: %w (build it with `make build`)", err)
	}
	es := []Entry{
		{Path: "dev", Mode: fs.ModeDir | 0o755},
		{Path: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Dev: [2]int{5, 1}},
		{Path: "proc", Mode: fs.ModeDir | 0o755},
		{Path: "sys", Mode: fs.ModeDir | 0o755},
		{Path: "init", Mode: 0o755, Size: st.Size(), src: spec.Agent},
	}
	if spec.Init == "" && len(spec.Modules) == 0 {
		return es, nil
	}
	es = append(es, Entry{Path: "lodge", Mode: fs.ModeDir | 0o755})
	if spec.Init != "" {
		st, err := os.Stat(spec.Init)
		if err != nil {
			return nil, fmt.Errorf("lodge-init: %w (build it with `make build`)", err)
		}
		es = append(es, Entry{Path: InitPath, Mode: 0o755, Size: st.Size(), src: spec.Init})
	}
	if len(spec.Modules) == 0 {
		return es, nil
	}
	es = append(es, Entry{Path: ModulesDir, Mode: fs.ModeDir | 0o755})
	var list strings.Builder
	for _, m := range spec.Modules {
		st, err := os.Stat(m.Path)
		if err != nil {
			return nil, err
		}
		p := path.Join(ModulesDir, m.Name+".ko")
		es = append(es, Entry{Path: p, Mode: 0o644, Size: st.Size(), src: m.Path})
		list.WriteString("/" + p + "\n")
	}
	es = append(es, Entry{Path: "lodge/modules.list", Mode: 0o644,
		Size: int64(list.Len()), data: []byte(list.String())})
	if len(spec.OnDemand) == 0 {
		return es, nil
	}
	es = append(es, Entry{Path: OnDemandDir, Mode: fs.ModeDir | 0o755})
	var mp strings.Builder
	seen := map[string]bool{}
	for _, chain := range spec.OnDemand {
		var paths []string
		for _, m := range chain {
			p := path.Join(OnDemandDir, m.Name+".ko")
			paths = append(paths, "/"+p)
			if seen[m.Name] {
				continue
			}
			seen[m.Name] = true
			st, err := os.Stat(m.Path)
			if err != nil {
				return nil, err
			}
			es = append(es, Entry{Path: p, Mode: 0o644, Size: st.Size(), src: m.Path})
		}
		last := chain[len(chain)-1]
		for _, name := range append([]string{last.Name}, last.Aliases...) {
			mp.WriteString(name + " " + strings.Join(paths, " ") + "\n")
		}
	}
	es = append(es, Entry{Path: "lodge/modprobe.list", Mode: 0o644, Size: int64(mp.Len()), data: []byte(mp.String())})
	return es, nil
}

// WriteInitrd writes the initrd as an uncompressed newc cpio archive (the
// lab measured compression to cost more boot time than it saves). Entries
// carry no timestamps, so the output is reproducible.
func WriteInitrd(w io.Writer, spec InitrdSpec) error {
	es, err := Manifest(spec)
	if err != nil {
		return err
	}
	cw := &newcWriter{w: w}
	for _, e := range es {
		h := cpioHeader{Name: e.Path, Mode: fileMode(e.Mode), Size: e.Size,
			RMajor: int64(e.Dev[0]), RMin: int64(e.Dev[1])}
		if err := cw.WriteHeader(h); err != nil {
			return fmt.Errorf("initrd %s: %w", e.Path, err)
		}
		switch {
		case e.data != nil:
			_, err = cw.Write(e.data)
		case e.src != "":
			err = copyFile(cw, e.src, e.Size)
		}
		if err != nil {
			return fmt.Errorf("initrd %s: %w", e.Path, err)
		}
	}
	return cw.Close()
}

func copyFile(w io.Writer, src string, size int64) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err == nil && n != size {
		err = fmt.Errorf("%s changed size while being read", src)
	}
	return err
}
