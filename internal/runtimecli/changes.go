package runtimecli

import (
	"context"
	"fmt"
	"io"
	"os"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/lodgeruntime/lodge/internal/shim"
)

// A container's changes (lodge commit and diff) come from its guest
// through its supervisor, which owns the VM:
//
//	Changes (lodge)                        supervisor
//	pipe; its write end ── fd.sock ──────> store[TOKEN]
//	ttrpc lodge.runtime.v1.Changes/Export
//	  {ID, Path: fdpass://TOKEN/1} ──────> take(TOKEN); agent stream
//	                                       (transport.KindChanges) copied
//	<── the pipe's read end: the tar ────  into the write end, closed
//	<── the call's reply: its error ─────
//
// The request is the task API's checkpoint request (ID and Path): what is
// asked is a checkpoint of the container's files, written to Path. The
// stream is the guest's: the caller must treat it as hostile
// (layers.ReadChanges).
const (
	changesService = "lodge.runtime.v1.Changes"
	changesExport  = "Export"     // the writable layer
	changesRoot    = "ExportRoot" // the whole root (lodge export)
)

// registerChanges serves the changes service on srv.
func registerChanges(srv *ttrpc.Server, svc *shim.Service, fds *fdStore) {
	method := func(whole bool) ttrpc.Method {
		return func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var r taskapi.CheckpointTaskRequest
			if err := unmarshal(&r); err != nil {
				return nil, err
			}
			return &emptypb.Empty{}, exportChanges(svc, fds, r.ID, r.Path, whole)
		}
	}
	srv.RegisterService(changesService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		changesExport: method(false),
		changesRoot:   method(true),
	}})
}

func exportChanges(svc *shim.Service, fds *fdStore, id, dest string, whole bool) error {
	out, err := fds.takeSecond("changes", dest)
	if err != nil {
		return err
	}
	defer out.Close()
	st, err := svc.Changes(id, whole)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := io.Copy(out, st); err != nil {
		return fmt.Errorf("copy the changes of %s: %w", id, err)
	}
	return nil
}

// Changes writes the changes of container id (created, running or paused,
// on the state root root) to w as its guest sends them: an OCI layer tar
// with Lodge's PAX records (see the agent's writeChanges). With whole it
// is the container's whole root.
func Changes(ctx context.Context, root, id string, whole bool, w io.Writer) error {
	if err := checkID(id); err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	token, err := passEnd(root, id, pw)
	pw.Close()
	if err != nil {
		return err
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, pr)
		copied <- err
	}()
	c, err := dialSupervisor(ctx, root, id)
	if err == nil {
		m := changesExport
		if whole {
			m = changesRoot
		}
		err = c.Call(ctx, changesService, m, &taskapi.CheckpointTaskRequest{ID: id, Path: schemeFDPass + token + "/1"}, &emptypb.Empty{})
		c.Close()
	}
	if err != nil {
		pr.Close() // the supervisor may still hold the write end
		<-copied
		return shim.FromWire(err)
	}
	return <-copied
}
