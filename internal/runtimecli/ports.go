package runtimecli

import (
	"context"
	"errors"
	"fmt"
	"net"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lodgeruntime/lodge/internal/shim"
	"github.com/lodgeruntime/lodge/internal/transport"
	"github.com/lodgeruntime/lodge/internal/unixsock"
)

// A connection to a port in a container (lodge port-forward, the sandbox
// service's ports) is made by its supervisor, which owns the VM:
//
//	DialPort (lodge)                        supervisor
//	socketpair; one end ── fd.sock ───────> store[TOKEN]
//	ttrpc lodge.runtime.v1.Ports/Dial
//	  {ID, Path: fdpass://TOKEN/1,
//	   Options: UInt32Value(port)} ───────> take(TOKEN); agent stream
//	                                        (transport.KindPort, the
//	                                        container's namespace)
//	<── the call's reply: the dial's error  spliced to the passed end
//	the other end: the connection
//
// The bytes are the server's in the guest: the caller treats them as it
// would any peer's on the network.
const (
	portsService = "lodge.runtime.v1.Ports"
	portsDial    = "Dial"
	// maxForwards bounds the connections one supervisor relays at once.
	maxForwards = 256
)

// registerPorts serves the ports service on srv.
func registerPorts(srv *ttrpc.Server, svc *shim.Service, fds *fdStore) {
	slots := make(chan struct{}, maxForwards)
	srv.RegisterService(portsService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		portsDial: func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var r taskapi.CheckpointTaskRequest
			if err := unmarshal(&r); err != nil {
				return nil, err
			}
			return &emptypb.Empty{}, dialPort(ctx, svc, fds, slots, &r)
		},
	}})
}

func dialPort(ctx context.Context, svc *shim.Service, fds *fdStore, slots chan struct{}, r *taskapi.CheckpointTaskRequest) error {
	var port wrapperspb.UInt32Value
	if r.Options == nil || r.Options.UnmarshalTo(&port) != nil || port.Value == 0 || port.Value > 65535 {
		return fmt.Errorf("a port's connection: no port (1-65535) given")
	}
	return relay(fds, slots, "a port's connection", r.Path,
		fmt.Sprintf("container %s: %d connections are forwarded already: close some", r.ID, cap(slots)),
		func() (net.Conn, error) { return svc.DialPort(ctx, r.ID, uint16(port.Value)) })
}

// relay splices the socket passed as dest (fdpass://TOKEN/1) to the
// stream open makes, in a slot of slots (full: busy is the error), until
// either side ends.
func relay(fds *fdStore, slots chan struct{}, what, dest, busy string, open func() (net.Conn, error)) error {
	f, err := fds.takeSecond(what, dest)
	if err != nil {
		return err
	}
	end, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: the passed descriptor: %w", what, err)
	}
	select {
	case slots <- struct{}{}:
	default:
		end.Close()
		return errors.New(busy)
	}
	c, err := open()
	if err != nil {
		end.Close()
		<-slots
		return err
	}
	go func() {
		defer func() { <-slots }()
		defer end.Close()
		defer c.Close()
		transport.Splice(end, c)
	}()
	return nil
}

// DialPort connects to 127.0.0.1:port in the network namespace of
// container id (created, running or paused, on the state root root), in
// its guest.
func DialPort(ctx context.Context, root, id string, port uint16) (net.Conn, error) {
	return callForConn(ctx, root, id, portsService, portsDial, wrapperspb.UInt32(uint32(port)))
}

// callForConn asks container id's supervisor for a connection: one end of
// a socket pair passed to it, named in a call of service's method with
// opts as its options; the other end once the call succeeded.
func callForConn(ctx context.Context, root, id, service, method string, opts proto.Message) (net.Conn, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	mine, theirs, err := unixsock.Pair()
	if err != nil {
		return nil, err
	}
	defer mine.Close()
	token, err := passEnd(root, id, theirs)
	theirs.Close()
	if err != nil {
		return nil, err
	}
	options, err := anypb.New(opts)
	if err != nil {
		return nil, err
	}
	c, err := dialSupervisor(ctx, root, id)
	if err != nil {
		return nil, err
	}
	err = c.Call(ctx, service, method, &taskapi.CheckpointTaskRequest{ID: id, Path: schemeFDPass + token + "/1", Options: options}, &emptypb.Empty{})
	c.Close()
	if err != nil {
		return nil, shim.FromWire(err)
	}
	return net.FileConn(mine)
}
