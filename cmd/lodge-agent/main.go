// Command lodge-agent is PID 1 inside a Lodge microVM. With the argument
// "init" it is libcontainer's container init instead (runc init), with
// "direct" a direct container's first step (directinit.Main) where the
// guest has no lodge-init, and with "seccomp-spec" the host's seccomp
// compiler (agent.SeccompSpecMain), which the host runs natively.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	_ "github.com/opencontainers/cgroups/devices" // device rules for container cgroups
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // container setup before the Go runtime starts

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/guest/agent"
	"github.com/lodgeruntime/lodge/internal/guest/boot"
	"github.com/lodgeruntime/lodge/internal/guest/directinit"
	"github.com/lodgeruntime/lodge/internal/seccompbpf"
	"github.com/lodgeruntime/lodge/internal/transport"
)

// stateDir holds libcontainer's state (the guest's tmpfs).
const stateDir = "/run/lodge/containers"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// containerInit is how the agent makes containers: "direct" where their
// spec allows (lodge-init), or "libcontainer" always (a build for
// A/B benchmarks: -ldflags "-X main.containerInit=libcontainer").
var containerInit = "direct"

// The main goroutine keeps the main thread for as long as the agent runs,
// so that no other goroutine ever runs on it. libcontainer starts a
// goroutine that locks its thread, unshares CLONE_FS and joins the
// container's mount namespace, leaving the thread to die with it; the Go
// runtime never ends the main thread, though, and parks it instead: had
// that goroutine run there, the agent's main thread (what /proc/1 and
// /proc/self show: root, mount namespace, mountinfo) would stay in that
// container's mount namespace and root for good. Seen in clones of
// templates whose agent made a container while main() waited for it
// (/proc/1/root was the warm-up container's deleted root).
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // never returns
	}
	if len(os.Args) > 1 && os.Args[1] == agent.DirectArg {
		directinit.Main() // returns only on error, which it reported
		os.Exit(127)
	}
	if len(os.Args) > 1 && os.Args[1] == seccompbpf.SpecArg {
		// The host's seccomp compiler, natively (not in a guest).
		if err := agent.SeccompSpecMain(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(boot.Modprobe(os.Args[1:]))
	}
	sink := agent.NewLogSink(os.Stderr)
	log := slog.New(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(log, sink); err != nil {
		log.Error("lodge-agent failed", "err", err)
		fmt.Fprintln(os.Stderr, "lodge-agent:", err)
	}
	if os.Getpid() == 1 {
		boot.PowerOff()
	}
	os.Exit(1)
}

func run(log *slog.Logger, sink *agent.LogSink) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("must run as PID 1 inside a Lodge VM")
	}
	// First pass: set the guest up, then re-exec from a sealed copy of the
	// binary; the second pass (sealed) goes straight to serving.
	if !boot.Sealed() {
		res, err := boot.Setup(log)
		if err != nil {
			return err
		}
		log.Info("guest set up", "modules", res.Modules, "took", res.Duration.Round(time.Millisecond))
		return boot.SealSelf() // returns only on error
	}
	conn, err := openChannel()
	if err != nil {
		return err
	}
	var up float64
	if b, err := os.ReadFile("/proc/uptime"); err == nil {
		fmt.Sscanf(string(b), "%f", &up)
	}
	directInit, err := boot.SealInit()
	if err != nil {
		log.Warn("direct containers start with the agent's binary", "err", err)
	}
	if containerInit == "libcontainer" {
		directInit = ""
	}
	// A template's guest (it boots with lodge.preload) makes its first
	// container now, so that no clone of it pays for that.
	if _, template := boot.KernelParam("lodge.preload"); template {
		if err := agent.WarmUp(log, stateDir, directInit, slices.Contains(capabilities, agentv1.CapSeccomp)); err != nil {
			log.Warn("warm-up container", "err", err)
		}
	}
	log.Info("lodge-agent ready", "version", version, "uptime_s", up)
	srv := agent.New(agent.Config{
		Log:          log,
		StateDir:     stateDir,
		SharesDir:    "/run/lodge/shares",
		Version:      version,
		Capabilities: capabilities,
		Sink:         sink,
		Reap:         true, // PID 1
		NoDirect:     containerInit == "libcontainer",
		DirectInit:   directInit,
	})
	// One session at a time; the next begins when the host (or, in a
	// clone of a template, a new host) connects and synchronises.
	for {
		err := srv.Serve(context.Background(), conn)
		log.Info("host session ended", "err", err)
		if conn, err = openChannel(); err != nil {
			return err
		}
	}
}

// openChannel opens the host link the kernel command line names.
func openChannel() (io.ReadWriteCloser, error) {
	if ch, _ := boot.KernelParam("lodge.channel"); ch == "vsock" {
		l, err := transport.ListenVsock(transport.VsockAgentPort)
		if err != nil {
			return nil, err
		}
		defer l.Close()
		return l.Accept()
	}
	return transport.OpenSerialPort(transport.AgentPortName)
}
