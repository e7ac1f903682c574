package runtimecli

import (
	"context"
	"fmt"
	"net"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lodgeruntime/lodge/internal/shim"
)

// A watch of a container's directory (lodge watch) is opened by its
// supervisor, as a port's connection is (ports.go):
//
//	Watch (lodge)                           supervisor
//	socketpair; one end ── fd.sock ───────> store[TOKEN]
//	ttrpc lodge.runtime.v1.Files/Watch
//	  {ID, Path: fdpass://TOKEN/1,
//	   Options: StringValue(dir)} ────────> take(TOKEN); agent stream
//	                                        (transport.KindWatch)
//	<── the call's reply: the agent's       spliced to the passed end
//	    refusal, if any
//	the other end: the events
//
// The events are the guest's: the caller bounds and checks each.
const (
	filesService        = "lodge.runtime.v1.Files"
	filesWatch          = "Watch"
	filesWatchRecursive = "WatchRecursive"
	// maxWatches bounds the watches one supervisor relays at once.
	maxWatches = 64
)

// registerFiles serves the files service on srv.
func registerFiles(srv *ttrpc.Server, svc *shim.Service, fds *fdStore) {
	slots := make(chan struct{}, maxWatches)
	method := func(recursive bool) ttrpc.Method {
		return func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var r taskapi.CheckpointTaskRequest
			if err := unmarshal(&r); err != nil {
				return nil, err
			}
			var dir wrapperspb.StringValue
			if r.Options == nil || r.Options.UnmarshalTo(&dir) != nil || dir.Value == "" {
				return nil, fmt.Errorf("a watch: no directory given")
			}
			return &emptypb.Empty{}, relay(fds, slots, "a watch", r.Path,
				fmt.Sprintf("container %s: %d watches are open already: end some", r.ID, maxWatches),
				func() (net.Conn, error) { return svc.Watch(ctx, r.ID, dir.Value, recursive) })
		}
	}
	srv.RegisterService(filesService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		filesWatch:          method(false),
		filesWatchRecursive: method(true),
	}})
}

// Watch opens a watch of dir, an absolute path in container id (created,
// running or paused, on the state root root), in its guest: one JSON event
// a line (the agent's WatchEvent), until the connection is closed or the
// directory goes.
func Watch(ctx context.Context, root, id, dir string, recursive bool) (net.Conn, error) {
	m := filesWatch
	if recursive {
		m = filesWatchRecursive
	}
	return callForConn(ctx, root, id, filesService, m, wrapperspb.String(dir))
}
