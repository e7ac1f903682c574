// Package config reads Lodge's TOML configuration file and holds its
// defaults. It is the only package that reads configuration files or
// environment variables.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where Lodge looks for its configuration.
const DefaultPath = "/etc/lodge/config.toml"

// EnvPath names an environment variable that overrides DefaultPath.
const EnvPath = "LODGE_CONFIG"

// DefaultGuestDir holds the guest kernel and initrd that `make setup` builds.
const DefaultGuestDir = "/var/lib/lodge/guest"

// DefaultTemplateDir holds VM templates (tmpfs on most hosts: they are
// rebuilt after a reboot).
const DefaultTemplateDir = "/run/lodge/templates"

// DefaultQEMUUIDFirst starts the host user ids QEMUs run as: 0x70000000,
// above the ranges systemd gives containers (up to 0x6FFFFFFF) and below
// its own transient ones (0x7FFE0000 on).
const DefaultQEMUUIDFirst = 0x70000000

// DefaultLayerDir holds the erofs images of image layers.
const DefaultLayerDir = "/var/lib/lodge/layers"

// Config is Lodge's configuration. Every field has a default.
type Config struct {
	Guest    Guest    `toml:"guest"`
	VMM      VMM      `toml:"vmm"`
	Sharefs  Sharefs  `toml:"sharefs"`
	Template Template `toml:"template"`
	Layers   Layers   `toml:"layers"`
	Images   Images   `toml:"images"`
}

// DefaultImageDir holds the images of the lodge command.
const DefaultImageDir = "/var/lib/lodge/images"

// Images configures the lodge command's image store.
type Images struct {
	// Dir holds blobs and names (layers are unpacked into layers.dir).
	Dir string `toml:"dir"`
	// ContainersDir holds the lodge command's containers: a record, the
	// bundle and the log of each, kept until `lodge rm`.
	ContainersDir string `toml:"containers_dir"`
	// VolumesDir holds named and anonymous volumes.
	VolumesDir string `toml:"volumes_dir"`
}

// Layers configures container roots built in the guest from erofs images
// of their image layers (containerd's snapshots) instead of a host
// directory shared with the guest.
type Layers struct {
	Enabled bool `toml:"enabled"`
	// Dir holds the layer images, one per layer, shared by all sandboxes.
	Dir string `toml:"dir"`
	// WritableGiB is the size of each container's writable layer (a
	// sparse file: it takes on disk what the container writes).
	WritableGiB int `toml:"writable_gib"`
}

// Template configures VM templates: sandboxes start as clones of a booted
// guest instead of booting a kernel.
type Template struct {
	Enabled bool `toml:"enabled"`
	// Dir holds the templates (memory and device state per VM shape).
	Dir string `toml:"dir"`
	// MemoryClassesMiB and VCPUClasses are the template sizes; a sandbox
	// rounds up to the smallest that holds it (larger ones cold-boot).
	MemoryClassesMiB []int `toml:"memory_classes_mib"`
	VCPUClasses      []int `toml:"vcpu_classes"`
	// Pool is how many clones of each template used on this host are kept
	// restored, warmed and stopped, ready to hand out (0: none). Each costs
	// its VM's host memory while it waits (~100 MB under TCG).
	Pool int `toml:"pool"`
	// PoolCgroup is the host cgroup (an absolute cgroupfs path) where
	// pooled clones wait: their keepers and QEMUs, and the memory they
	// charge before a sandbox takes them, are counted there and can be
	// limited there. A sandbox that takes a clone moves it into its own.
	PoolCgroup string `toml:"pool_cgroup"`
}

// DefaultPoolCgroup is template.pool_cgroup's default.
const DefaultPoolCgroup = "/lodge-pool"

// MaxPool bounds template.pool.
const MaxPool = 64

// AnnotationInit chooses how the guest makes a container's processes:
// "direct" (the default: the agent's own init where the spec allows it)
// or "libcontainer" (runc's init, always).
const AnnotationInit = "io.lodge.init"

// AnnotationTemplate lets a pod or container opt out of templates
// ("false"): its VM then shares no memory pages with other sandboxes.
const AnnotationTemplate = "io.lodge.template"

// TemplateOptOut reads AnnotationTemplate: the reason to cold-boot, or ""
// when templates may be used; a value other than true or false is an error.
func TemplateOptOut(ann map[string]string) (string, error) {
	v, ok := ann[AnnotationTemplate]
	switch {
	case !ok || v == "true":
		return "", nil
	case v == "false":
		return AnnotationTemplate + "=false (no memory pages shared with other sandboxes)", nil
	}
	return "", fmt.Errorf("annotation %s=%q: want true or false", AnnotationTemplate, v)
}

// Guest locates the guest boot artifacts.
type Guest struct {
	// Dir is the artifacts directory `lodge setup` fills.
	Dir string `toml:"dir"`
	// Kernel and Initrd default to Dir/vmlinux and Dir/initrd.img.
	Kernel string `toml:"kernel"`
	Initrd string `toml:"initrd"`
	// KernelPackage is the Debian package setup unpacks the kernel from.
	KernelPackage string `toml:"kernel_package"`
}

// VMM configures the virtual machines.
type VMM struct {
	// QEMU is the qemu-system-x86_64 binary (a name is looked up in PATH).
	QEMU string `toml:"qemu"`
	// Accel is "auto" (KVM when usable, else TCG), "kvm" or "tcg".
	Accel string `toml:"accel"`
	// VCPUs and MemoryMiB size a sandbox's VM.
	VCPUs     int `toml:"vcpus"`
	MemoryMiB int `toml:"memory_mib"`
	// BootTimeout bounds the wait for the guest agent (TCG is slow).
	BootTimeout Duration `toml:"boot_timeout"`
	// HostReserveMiB is host memory no new VM may count on: a sandbox
	// starts only if the host's MemAvailable less this covers its VM's
	// memory.
	HostReserveMiB int `toml:"host_reserve_mib"`
	// QEMUUIDFirst and QEMUUIDCount are host user ids (and group ids of
	// the same numbers) that belong to no one else: each QEMU runs as one
	// of its own. A clone's keeps 9p's capabilities in a user namespace of
	// its own that maps the host ids below QEMUUIDFirst as themselves:
	// those are the owners a guest can give files in its volumes. A count
	// of 0 runs every QEMU as root.
	QEMUUIDFirst int `toml:"qemu_uid_first"`
	QEMUUIDCount int `toml:"qemu_uid_count"`
	// AgentChannel is "auto" (vsock where /dev/vhost-vsock exists, else
	// virtio-serial), "vsock" or "virtio-serial".
	AgentChannel string `toml:"agent_channel"`
	// MergePages lets the host's KSM merge identical pages of clones'
	// guest RAM (QEMU's mem-merge), across sandboxes: less host memory
	// where KSM runs, at the price of the page-deduplication side channel
	// between tenants (CVE-2015-2877; with Rowhammer, Flip Feng Shui).
	// Off: no guest's pages are ever offered to KSM. Sandboxes that opt
	// out of templates (io.lodge.template=false) are never merged.
	MergePages bool `toml:"merge_pages"`
}

// Sharefs is what configured virtio-fs, which no sandbox uses any more:
// QEMU serves every sandbox's files over 9p. Its key is still read, so
// that a config file that names virtiofsd loads, and is ignored.
type Sharefs struct {
	Virtiofsd string `toml:"virtiofsd"`
}

// Duration is a time.Duration written as "60s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}

// MarshalText prints a duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		Guest: Guest{Dir: DefaultGuestDir, KernelPackage: "linux-image-amd64"},
		VMM: VMM{QEMU: "qemu-system-x86_64", Accel: "auto", VCPUs: 1, MemoryMiB: 256,
			BootTimeout: Duration{60 * time.Second}, AgentChannel: "auto", HostReserveMiB: 256,
			QEMUUIDFirst: DefaultQEMUUIDFirst, QEMUUIDCount: 65536},
		Template: Template{Enabled: true, Dir: DefaultTemplateDir, PoolCgroup: DefaultPoolCgroup,
			MemoryClassesMiB: []int{256, 512, 1024, 2048, 4096}, VCPUClasses: []int{1, 2, 4, 8}},
		Layers: Layers{Enabled: true, Dir: DefaultLayerDir, WritableGiB: 10},
		Images: Images{Dir: DefaultImageDir, ContainersDir: "/var/lib/lodge/containers", VolumesDir: "/var/lib/lodge/volumes"},
	}
}

// Load reads the file named by $LODGE_CONFIG, else DefaultPath. A missing
// default file means the defaults; a missing file that was asked for by
// name is an error.
func Load() (Config, error) {
	path, explicit := os.LookupEnv(EnvPath)
	if !explicit {
		path = DefaultPath
	}
	cfg, err := LoadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		cfg = Default()
		cfg.fill()
		return cfg, cfg.Validate()
	}
	return cfg, err
}

// LoadFile reads one configuration file over the defaults.
func LoadFile(path string) (Config, error) {
	cfg := Default()
	md, err := toml.DecodeFile(path, &cfg)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return Config{}, fmt.Errorf("config %s: unknown key %q", path, und[0].String())
	}
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

func (c *Config) fill() {
	if c.Guest.Kernel == "" {
		c.Guest.Kernel = filepath.Join(c.Guest.Dir, "vmlinux")
	}
	if c.Guest.Initrd == "" {
		c.Guest.Initrd = filepath.Join(c.Guest.Dir, "initrd.img")
	}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.Guest.Dir) {
		errs = append(errs, fmt.Errorf("guest.dir %q must be an absolute path", c.Guest.Dir))
	}
	switch c.VMM.Accel {
	case "auto", "kvm", "tcg":
	default:
		errs = append(errs, fmt.Errorf("vmm.accel %q: want auto, kvm or tcg", c.VMM.Accel))
	}
	switch c.VMM.AgentChannel {
	case "auto", "vsock", "virtio-serial":
	default:
		errs = append(errs, fmt.Errorf("vmm.agent_channel %q: want auto, vsock or virtio-serial", c.VMM.AgentChannel))
	}
	if c.VMM.VCPUs < 1 || c.VMM.VCPUs > 64 {
		errs = append(errs, fmt.Errorf("vmm.vcpus %d: want 1..64", c.VMM.VCPUs))
	}
	if c.VMM.MemoryMiB < 64 {
		errs = append(errs, fmt.Errorf("vmm.memory_mib %d: want at least 64", c.VMM.MemoryMiB))
	}
	if c.VMM.QEMUUIDCount < 0 || c.VMM.QEMUUIDCount > 0 && (c.VMM.QEMUUIDFirst < 1<<16 || c.VMM.QEMUUIDFirst+c.VMM.QEMUUIDCount > 1<<32-2) {
		errs = append(errs, fmt.Errorf("vmm.qemu_uid_first %d, vmm.qemu_uid_count %d: want a range of user ids from 65536 on that no one else uses "+
			"(the ids below are the owners a clone's files may have), or a count of 0", c.VMM.QEMUUIDFirst, c.VMM.QEMUUIDCount))
	}
	if c.VMM.HostReserveMiB < 0 {
		errs = append(errs, fmt.Errorf("vmm.host_reserve_mib %d: want 0 or more", c.VMM.HostReserveMiB))
	}
	if !filepath.IsAbs(c.Images.Dir) || !filepath.IsAbs(c.Images.ContainersDir) || !filepath.IsAbs(c.Images.VolumesDir) {
		errs = append(errs, fmt.Errorf("images.dir %q, images.containers_dir %q and images.volumes_dir %q must be absolute paths",
			c.Images.Dir, c.Images.ContainersDir, c.Images.VolumesDir))
	}
	if !filepath.IsAbs(c.Layers.Dir) {
		errs = append(errs, fmt.Errorf("layers.dir %q must be an absolute path", c.Layers.Dir))
	}
	if c.Layers.WritableGiB < 1 {
		errs = append(errs, fmt.Errorf("layers.writable_gib = %d: want at least 1", c.Layers.WritableGiB))
	}
	if !filepath.IsAbs(c.Template.Dir) {
		errs = append(errs, fmt.Errorf("template.dir %q must be an absolute path", c.Template.Dir))
	}
	for _, m := range c.Template.MemoryClassesMiB {
		if m < 64 {
			errs = append(errs, fmt.Errorf("template.memory_classes_mib: %d is below 64", m))
		}
	}
	if pc := c.Template.PoolCgroup; !strings.HasPrefix(pc, "/") || pc != filepath.Clean(pc) || pc == "/" || strings.Contains(pc, ":") {
		errs = append(errs, fmt.Errorf("template.pool_cgroup %q: want an absolute cgroupfs path below the root, such as %q", pc, DefaultPoolCgroup))
	}
	if c.Template.Pool < 0 || c.Template.Pool > MaxPool {
		errs = append(errs, fmt.Errorf("template.pool = %d: want 0..%d", c.Template.Pool, MaxPool))
	}
	for _, v := range c.Template.VCPUClasses {
		if v < 1 || v > 255 {
			errs = append(errs, fmt.Errorf("template.vcpu_classes: %d is out of 1..255", v))
		}
	}
	if c.VMM.BootTimeout.Duration <= 0 {
		errs = append(errs, fmt.Errorf("vmm.boot_timeout must be positive"))
	}
	return errors.Join(errs...)
}
