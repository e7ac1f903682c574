package directinit

import (
	"encoding/json"

	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// WarmArg, as the first step's last argument, makes it warm: it runs the
// part of a first step that changes nothing outside its own process (the
// Go runtime's start, the config's decoding, the capabilities' reading)
// and exits. Under TCG a clone's QEMU translates a program's code the
// first time the guest runs it, whichever process runs it; the agent runs
// a warm first step at idle priority once a pod's holder is up, so that
// the pod's first container finds that code translated (docs/performance.md).
const WarmArg = "warm"

// warmConfig is a first step's config with every field set, so that the
// decoder's code for each of them is run (TestWarmConfigSetsEveryField).
func warmConfig() *Config {
	umask, oom := uint32(0o22), 0
	return &Config{
		ContainerID: "warm",
		Root:        "/warm",
		Mounts: []*configs.Mount{
			{Source: "proc", Destination: "/proc", Device: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
			{Source: "/warm/hosts", Destination: "/etc/hosts", Device: "bind", Flags: unix.MS_BIND | unix.MS_REC,
				PropagationFlags: []int{unix.MS_PRIVATE}, ClearedFlags: unix.MS_RDONLY, Data: "mode=755"},
		},
		Devices: []*config.Device{{Rule: config.Rule{Type: config.CharDevice, Major: 1, Minor: 3,
			Permissions: "rwm", Allow: true}, Path: "/dev/null", FileMode: 0o666}},
		SetupDev:       true,
		MaskPaths:      []string{"/proc/kcore"},
		ROPaths:        []string{"/proc/sys"},
		Readonlyfs:     true,
		Propagation:    unix.MS_SLAVE | unix.MS_REC,
		Cgroup2Path:    "/sys/fs/cgroup/warm",
		Hostname:       "warm",
		Domainname:     "warm",
		Loopback:       true,
		NoKeyring:      true,
		Umask:          &umask,
		OOMScoreAdj:    &oom,
		SeccompProgram: &SeccompProgram{Flags: 1, Filter: make([]byte, 8)},
		Args:           []string{"/bin/true"},
		Env:            []string{"PATH=/bin", "HOME=/"},
		Cwd:            "/",
		UID:            1000,
		GID:            1000,
		Groups:         []int{1000},
		Caps:           &configs.Capabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_KILL"}, Permitted: []string{"CAP_KILL"}, Inheritable: []string{"CAP_KILL"}, Ambient: []string{"CAP_KILL"}},
		NoNewPrivs:     true,
		Rlimits:        []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: 1024, Soft: 1024}},
		Console:        true,
		ConsoleSizeW:   80,
		ConsoleSizeH:   24,
		Exec:           true,
	}
}

// warm is a warm first step's work (see WarmArg).
func warm() error {
	b, err := json.Marshal(warmConfig())
	if err != nil {
		return err
	}
	var in Config
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if _, err := capabilities.New(in.Caps); err != nil {
		return err
	}
	_, err = processEnv(in.Env, -1)
	return err
}
