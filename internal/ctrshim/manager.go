package ctrshim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/namespaces"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/lodgeruntime/lodge/internal/hostmount"
	"github.com/lodgeruntime/lodge/internal/oci"
	"github.com/lodgeruntime/lodge/internal/procid"
	"github.com/lodgeruntime/lodge/internal/sandbox"
)

// RuntimeName is the runtime type containerd is configured with.
const RuntimeName = "io.containerd.lodge.v2"

// manager is the shim's bootstrap: `start` (find or spawn the shim that
// serves a container) and `delete` (clean up after a shim that died).
type manager struct {
	stateRoot string
}

var _ cshim.Manager = (*manager)(nil)

func (m *manager) Name() string { return RuntimeName }

// Start runs in the container's bundle directory. A container of a pod
// whose shim already runs gets that shim's address; otherwise a new shim
// process is started, serving on a socket made here.
func (m *manager) Start(ctx context.Context, id string, opts cshim.StartOpts) (_ string, retErr error) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	b, err := oci.LoadBundle(cwd)
	if err != nil {
		return "", err
	}
	r := roleOf(id, b.Spec)
	address, err := cshim.SocketAddress(ctx, opts.Address, r.group)
	if err != nil {
		return "", err
	}
	socket, err := cshim.NewSocket(address)
	if err != nil {
		if !cshim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
		if cshim.CanConnect(address) {
			// The pod's shim serves this container too.
			return address, cshim.WriteAddress("address", address)
		}
		// A dead shim's socket.
		if err := cshim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = cshim.NewSocket(address); err != nil {
			return "", fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			cshim.RemoveSocket(address)
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	// Not cancelable: the library cancels ctx as this process exits, and a
	// command bound to it would be killed if that is seen before Wait
	// returns (the shim outlives `start`).
	cmd, err := cshim.Command(context.WithoutCancel(ctx), &cshim.CommandConfig{Runtime: self, Address: opts.Address,
		TTRPCAddress: opts.TTRPCAddress, Path: cwd, Args: []string{"-id", id}})
	if err != nil {
		return "", err
	}
	if opts.Debug {
		cmd.Args = append(cmd.Args, "-debug")
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start shim: %w", err)
	}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
		}
	}()
	// The shim outlives this process; reap it if it dies first.
	go cmd.Wait()
	if err := cshim.WriteAddress("address", address); err != nil {
		return "", err
	}
	// containerd's shims lower their OOM score below containerd's; that
	// needs CAP_SYS_RESOURCE, which not every host grants. Without it the
	// shim keeps the default score, as containerd's runc shim does.
	if err := cshim.AdjustOOMScore(cmd.Process.Pid); err != nil && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
		return "", fmt.Errorf("set the shim's OOM score: %w", err)
	}
	return address, nil
}

// Stop cleans up after a shim that is gone (containerd runs `delete` when
// it cannot reach it): the container's rootfs mount, and for the container
// that owned the VM, the VM's processes, network plumbing and state.
func (m *manager) Stop(ctx context.Context, id string) (cshim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return cshim.StopStatus{}, err
	}
	status := cshim.StopStatus{ExitStatus: 128 + int(unix.SIGKILL), ExitedAt: time.Now()}
	rootfs := filepath.Join(cwd, "rootfs")
	if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	b, err := oci.LoadBundle(cwd)
	if err != nil {
		// Nothing to know the pod by: the container's own mount was all.
		return status, nil
	}
	r := roleOf(id, b.Spec)
	if !r.ownsVM {
		return status, nil
	}
	ns, _ := namespaces.Namespace(ctx)
	dir := podDir(m.stateRoot, ns, r.group)
	rec, err := loadPodRecord(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return status, nil
		}
		return status, fmt.Errorf("read pod record: %w", err)
	}
	if rec.Shim.Alive() {
		// containerd lost the shim, not the other way round: end it, so
		// that nothing serves a pod containerd forgot.
		procid.KillAll(ctx, []procid.ID{rec.Shim})
	}
	return status, cleanupPod(ctx, dir, rec)
}

// cleanupPod ends a pod's VM processes and removes what they used.
func cleanupPod(ctx context.Context, dir string, rec *podRecord) error {
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	procid.KillAll(kctx, rec.VMProcs)
	cancel()
	sandbox.KillStrays(dir)
	var errs []error
	if rec.Network != nil {
		errs = append(errs, rec.Network.teardown())
	}
	errs = append(errs, hostmount.UnmountBelow(dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up pod %s: %w (state kept in %s)", rec.Sandbox, err, dir)
	}
	return os.RemoveAll(dir)
}
