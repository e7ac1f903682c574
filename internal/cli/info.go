package cli

// docker info and docker system df, for Lodge: what the host holds
// (containers, images, volumes, networks, build cache) and how it runs
// them (the accelerator, the guest, templates), read from the stores and
// `lodge check`'s facts; nothing is asked of a daemon, there is none.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/build"
	"github.com/lodgeruntime/lodge/internal/host"
	"github.com/lodgeruntime/lodge/internal/image"
)

// hostInfo is what lodge info prints (--format names its fields).
type hostInfo struct {
	ServerVersion     string
	Containers        int
	ContainersRunning int
	ContainersPaused  int
	ContainersStopped int
	Images            int
	Volumes           int
	Networks          int
	Runtime           string
	Accelerator       string
	AcceleratorReason string
	GuestKernel       string
	Templates         string
	KernelVersion     string
	OperatingSystem   string
	NCPU              int
	MemTotal          int64
	ImagesDir         string
	ContainersDir     string
	VolumesDir        string
	Warnings          []string
}

func (a *app) hostInfo() hostInfo {
	in := hostInfo{ServerVersion: a.env.Version, Runtime: "lodge (each container in a microVM of its own)",
		NCPU: runtime.NumCPU(), ImagesDir: a.images().Dir, ContainersDir: containersDir, VolumesDir: volumesDir,
		Templates: templateStatus(a.cfg)}
	if ctrs, err := allCtrs(); err == nil {
		for _, r := range ctrs {
			in.Containers++
			switch st, _ := r.status(); st {
			case "running":
				in.ContainersRunning++
			case "paused":
				in.ContainersPaused++
			default:
				in.ContainersStopped++
			}
		}
	} else {
		in.Warnings = append(in.Warnings, "containers: "+err.Error())
	}
	in.Images = len(a.distinctImages())
	if vs, err := listVolumes(); err == nil {
		in.Volumes = len(vs)
	}
	if ns, err := lodgeNetworks(); err == nil {
		in.Networks = len(ns)
	}
	if accel, err := host.ChooseAccel(a.cfg); err == nil {
		in.Accelerator, in.AcceleratorReason = string(accel.Accel), accel.Reason
	} else {
		in.Warnings = append(in.Warnings, "accelerator: "+err.Error())
	}
	if b, err := os.ReadFile(filepath.Join(a.cfg.Guest.Dir, "kernel.release")); err == nil {
		in.GuestKernel, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n") // the release, then its package
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		in.KernelVersion = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				in.OperatingSystem = strings.Trim(v, `"`)
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		in.MemTotal = int64(si.Totalram) * int64(si.Unit)
	}
	return in
}

func (in hostInfo) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	line := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	line("Server Version", in.ServerVersion)
	line("Containers", in.Containers)
	line(" Running", in.ContainersRunning)
	line(" Paused", in.ContainersPaused)
	line(" Stopped", in.ContainersStopped)
	line("Images", in.Images)
	line("Volumes", in.Volumes)
	line("Networks", in.Networks)
	line("Runtime", in.Runtime)
	line("Accelerator", fmt.Sprintf("%s (%s)", in.Accelerator, in.AcceleratorReason))
	line("Guest Kernel", in.GuestKernel)
	line("Templates", in.Templates)
	line("Kernel Version", in.KernelVersion)
	line("Operating System", in.OperatingSystem)
	line("CPUs", in.NCPU)
	line("Total Memory", humanSize(in.MemTotal))
	line("Images Dir", in.ImagesDir)
	line("Containers Dir", in.ContainersDir)
	line("Volumes Dir", in.VolumesDir)
	tw.Flush()
	for _, warn := range in.Warnings {
		fmt.Fprintln(w, "WARNING:", warn)
	}
}

// distinctImages are the stored images, each once whatever its names
// (docker counts images by ID).
func (a *app) distinctImages() []*image.Image {
	refs, err := a.images().List()
	if err != nil {
		return nil
	}
	seen := map[v1.Hash]bool{}
	var out []*image.Image
	for _, r := range refs {
		if im, err := a.images().Open(r); err == nil && !seen[im.ConfigDigest] {
			seen[im.ConfigDigest] = true
			out = append(out, im)
		}
	}
	return out
}

// dfRow is one line of system df.
type dfRow struct {
	Type                string
	TotalCount, Active  int
	Size, Reclaimable   int64
	SizeH, ReclaimableH string `json:"-"`
}

// diskUsage is system df's table: each kind's count, those in use, the
// bytes it takes and those a prune would give back.
func (a *app) diskUsage() []dfRow {
	ctrs, _ := allCtrs()
	usedImages := map[string]bool{}
	var ctrRow dfRow
	ctrRow.Type = "Containers"
	for _, r := range ctrs {
		usedImages[r.ImageID] = true
		size := allocated(filepath.Join(bundleDir(r.ID), "lodge-rw.img"))
		ctrRow.TotalCount++
		ctrRow.Size += size
		if _, running := r.status(); running {
			ctrRow.Active++
		} else {
			ctrRow.Reclaimable += size
		}
	}
	imgRow := dfRow{Type: "Images"}
	layerSize := map[v1.Hash]int64{}
	usedLayers := map[v1.Hash]bool{}
	for _, im := range a.distinctImages() {
		imgRow.TotalCount++
		used := usedImages[im.ConfigDigest.Hex]
		if used {
			imgRow.Active++
		}
		for _, l := range im.Manifest.Layers {
			layerSize[l.Digest] = l.Size
			usedLayers[l.Digest] = usedLayers[l.Digest] || used
		}
	}
	for d, n := range layerSize {
		imgRow.Size += n
		if !usedLayers[d] {
			imgRow.Reclaimable += n
		}
	}
	volRow := dfRow{Type: "Local Volumes"}
	if vs, err := listVolumes(); err == nil {
		for _, v := range vs {
			size := dirBytes(v.dataDir())
			volRow.TotalCount++
			volRow.Size += size
			if len(volumeUsers(v.Name)) > 0 {
				volRow.Active++
			} else {
				volRow.Reclaimable += size
			}
		}
	}
	cacheRow := dfRow{Type: "Build Cache"}
	caches, _ := build.CacheMounts(a.images().Dir) // its layout is the build package's
	for _, cm := range caches {
		cacheRow.TotalCount++
		cacheRow.Size += cm.Size
		cacheRow.Reclaimable += cm.Size
	}
	rows := []dfRow{imgRow, ctrRow, volRow, cacheRow}
	for i := range rows {
		rows[i].SizeH = humanSize(rows[i].Size)
		rows[i].ReclaimableH = humanSize(rows[i].Reclaimable)
		if rows[i].Size > 0 {
			rows[i].ReclaimableH += fmt.Sprintf(" (%d%%)", rows[i].Reclaimable*100/rows[i].Size)
		}
	}
	return rows
}

// allocated is the bytes a (sparse) file takes on disk.
func allocated(p string) int64 {
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

// dirBytes is the bytes the files below dir take on disk.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n += allocated(p)
		}
		return nil
	})
	return n
}

func addInfoCommands(root, system *cobra.Command, a *app) {
	var format string
	info := &cobra.Command{
		Use:   "info",
		Short: "what this host's lodge holds and how it runs it (--format: a Go template, e.g. '{{.Accelerator}}')",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := a.hostInfo()
			if format != "" {
				return printInspect(cmd.OutOrStdout(), []any{in}, format)
			}
			in.print(cmd.OutOrStdout())
			return nil
		},
	}
	info.Flags().StringVarP(&format, "format", "f", "", "a Go template, e.g. '{{.ContainersRunning}}' or '{{json .}}'")
	var dfFormat string
	df := &cobra.Command{
		Use:   "df",
		Short: "the disk space images, containers, volumes and the build cache take",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var buf bytes.Buffer
			err := printList(&buf, a.diskUsage(), dfFormat, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE", func(r dfRow) string {
				return fmt.Sprintf("%s\t%d\t%d\t%s\t%s", r.Type, r.TotalCount, r.Active, r.SizeH, r.ReclaimableH)
			})
			cmd.OutOrStdout().Write(buf.Bytes())
			return err
		},
	}
	df.Flags().StringVar(&dfFormat, "format", "table", "table, json, or a Go template")
	root.AddCommand(info)
	system.AddCommand(cloneCmd(info), df)
}
