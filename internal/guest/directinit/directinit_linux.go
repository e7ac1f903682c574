// Package directinit is a direct container's first step (Main): lodge-init,
// a small static binary the agent starts in the container's namespaces and
// cgroup, which the agent made or joined before it started it (see
// internal/guest/agent/direct_linux.go). It does what
// libcontainer's `runc init` does for the specs a direct container serves,
// in the same order and with the same checks, but without nsexec's stages,
// libcontainer's sync protocol or a second Go program: under TCG every one
// of those is tens of milliseconds of emulated code per container. It
// imports none of the agent's RPC code, so that it starts in a fraction of
// the agent's time.
package directinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"

	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/capabilities"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/keys"
	"github.com/opencontainers/runc/libcontainer/utils"
	"golang.org/x/sys/unix"
)

// The first step's file descriptors, in the order of exec.Cmd.ExtraFiles.
const (
	ConfigFd  = 3 // Config as JSON; then a byte (or EOF) to go on
	ReportFd  = 4 // Ready once ready, or an error's text; closes at the exec
	ConsoleFd = 5 // a socket for the terminal's master, with a terminal
	MountNsFd = 6 // an exec's container's mount namespace
)

// Ready is what the first step reports once its container is set up and
// it waits to be started.
const Ready = 'R'

// Config is what a direct container's first step is told.
type Config struct {
	// Exec: a process joins a running container (its namespaces joined
	// by the agent), and nothing of the root is set up.
	Exec        bool
	ContainerID string
	Root        string // the root, in the agent's mount namespace
	Mounts      []*configs.Mount
	Devices     []*config.Device
	SetupDev    bool // /dev is not a bind mount: make its nodes and links
	MaskPaths   []string
	ROPaths     []string
	Readonlyfs  bool
	Propagation int    // of the root's mounts (MS_SLAVE|MS_REC by default)
	Cgroup2Path string // the container's cgroup, bound if cgroup2 cannot be mounted
	Hostname    string
	Domainname  string
	Loopback    bool // a new network namespace: bring lo up
	NoKeyring   bool
	Umask       *uint32
	OOMScoreAdj *int
	// Seccomp is the agent's (its profile, which it compiles); the first
	// step gets SeccompProgram, the compiled filter (seccomp_linux.go).
	Seccomp        *configs.Seccomp `json:"-"`
	SeccompProgram *SeccompProgram

	Args, Env    []string
	Cwd          string
	UID, GID     int
	Groups       []int
	Caps         *configs.Capabilities
	NoNewPrivs   bool
	Rlimits      []configs.Rlimit
	Console      bool
	ConsoleSizeW uint16
	ConsoleSizeH uint16
}

// Main is a direct container's first step; it returns only on error,
// which it has also reported to the agent.
func Main() error {
	// The helper modes, named by the last argument, run and exit.
	if a := os.Args; len(a) > 1 {
		mode := map[string]func() error{WarmArg: warm, CaptureArg: captureMain}[a[len(a)-1]]
		if mode != nil {
			err := mode()
			if err == nil {
				os.Exit(0)
			}
			fmt.Fprintln(os.Stderr, err)
			return err
		}
	}
	// Credentials, capabilities and the seccomp filter are the thread's:
	// the thread that sets them up is the one that executes the program.
	runtime.LockOSThread()
	// Until it executes the program (which makes it dumpable again), no
	// process of the container may open this one's /proc files: its root
	// and descriptors are the agent's (runc's nsexec does the same).
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	report := os.NewFile(ReportFd, "direct-report")
	fail := func(err error) error {
		fmt.Fprint(report, err)
		return err
	}
	var in Config
	// No buffering: what follows the config is the start, written later.
	cf := os.NewFile(ConfigFd, "direct-config")
	if err := json.NewDecoder(cf).Decode(&in); err != nil {
		return fail(fmt.Errorf("direct init: config: %w", err))
	}
	if len(in.Args) == 0 {
		return fail(errors.New("direct init: no program"))
	}
	var console *os.File
	if in.Console {
		console = os.NewFile(ConsoleFd, "direct-console")
	}
	if in.Exec {
		// The agent joined the container's other namespaces; the mount
		// namespace this thread joins itself (a process with threads
		// cannot, a thread that shares no file system state can).
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fail(fmt.Errorf("direct init: unshare CLONE_FS: %w", err))
		}
		if err := unix.Setns(MountNsFd, unix.CLONE_NEWNS); err != nil {
			return fail(fmt.Errorf("direct init: join the container's mount namespace: %w", err))
		}
		unix.Close(MountNsFd)
	}
	return fail(in.run(cf, report, console))
}

// run sets the container (or the process) up and executes the program; it
// returns only on error.
func (in *Config) run(start io.Reader, report io.Writer, console *os.File) error {
	unix.Umask(0)
	// The process's capabilities are read from /proc while it is the
	// agent's: a root may have no /proc (a pod's sandbox container).
	caps, err := capabilities.New(in.Caps)
	if err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	if !in.NoKeyring {
		// As runc: a session keyring of the container's own, so that no
		// container sees another's keys.
		id, err := keys.JoinSessionKeyring("_ses." + in.ContainerID)
		switch {
		case err == nil && !in.Exec:
			if err := keys.ModKeyringPerm(id, 0xffffffff, 0x80000); err != nil {
				return fmt.Errorf("session keyring: %w", err)
			}
		case err != nil && !errors.Is(err, unix.ENOSYS):
			return fmt.Errorf("session keyring: %w", err)
		}
	}
	if !in.Exec {
		if in.Loopback {
			if err := loopbackUp(); err != nil {
				return err
			}
		}
		if err := in.setupRoot(); err != nil {
			return err
		}
	}
	if in.Console {
		if err := in.setupConsole(console); err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
	}
	if !in.Exec {
		if err := in.finishRoot(); err != nil {
			return err
		}
	} else if in.Umask != nil {
		unix.Umask(int(*in.Umask))
	}
	if in.OOMScoreAdj != nil {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(*in.OOMScoreAdj)), 0); err != nil {
			return fmt.Errorf("oom_score_adj: %w", err)
		}
	}
	for _, rl := range in.Rlimits {
		if err := unix.Prlimit(0, rl.Type, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
			return fmt.Errorf("rlimit %d: %w", rl.Type, err)
		}
	}
	if in.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if in.SeccompProgram != nil && !in.NoNewPrivs {
		// Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load
		// it before the capabilities go.
		if err := in.SeccompProgram.Load(); err != nil {
			return err
		}
	}
	if err := in.finalizeProcess(caps); err != nil {
		return err
	}
	name, err := lookPath(in.Args[0], in.Env)
	if err != nil {
		return err
	}
	if in.SeccompProgram != nil && in.NoNewPrivs {
		if err := in.SeccompProgram.Load(); err != nil {
			return err
		}
	}
	if err := utils.CloseExecFrom(3); err != nil {
		return err
	}
	if !in.Exec {
		// Created: wait to be started (or killed).
		if _, err := report.Write([]byte{Ready}); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(start, b[:]); err != nil {
			return fmt.Errorf("wait to be started: %w", err)
		}
	}
	return fmt.Errorf("exec %s: %w", in.Args[0], unix.Exec(name, in.Args, in.Env))
}

// loopbackUp brings the container's loopback interface up with the two
// ioctls ifconfig uses: the same dev_change_flags in the kernel as
// rtnetlink's, without a netlink library's code, which under TCG a fresh
// clone's QEMU translates for every container with a network namespace of
// its own (3-53 ms of its start in four runs: docs/performance.md).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err == nil {
		err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr)
	}
	if err == nil && ifr.Uint16()&unix.IFF_UP == 0 {
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	return nil
}
