package runtimecli

import (
	"context"

	"github.com/containerd/ttrpc"

	agentv1 "github.com/lodgeruntime/lodge/api/agent/v1"
	"github.com/lodgeruntime/lodge/internal/shim"
)

// A container's file cache is dropped in its guest (lodge pause
// --reclaim) by its supervisor, through ttrpc lodge.runtime.v1.Memory/
// Reclaim: the agent's own request and reply.
const (
	memoryService = "lodge.runtime.v1.Memory"
	memoryReclaim = "Reclaim"
)

// registerMemory serves the memory service on srv.
func registerMemory(srv *ttrpc.Server, svc *shim.Service) {
	srv.RegisterService(memoryService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		memoryReclaim: func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var r agentv1.ContainerRequest
			if err := unmarshal(&r); err != nil {
				return nil, err
			}
			before, after, err := svc.Reclaim(ctx, r.ContainerId)
			if err != nil {
				return nil, err
			}
			return &agentv1.ReclaimResponse{FileBefore: before, FileAfter: after}, nil
		},
	}})
}

// Reclaim drops the file cache of container id (running or paused, on the
// state root root) in its guest, whose freed pages go back to the host,
// and returns the cache's size before and after, as the guest tells them.
func Reclaim(ctx context.Context, root, id string) (before, after uint64, err error) {
	if err := checkID(id); err != nil {
		return 0, 0, err
	}
	c, err := dialSupervisor(ctx, root, id)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	var r agentv1.ReclaimResponse
	if err := c.Call(ctx, memoryService, memoryReclaim, &agentv1.ContainerRequest{ContainerId: id}, &r); err != nil {
		return 0, 0, shim.FromWire(err)
	}
	return r.FileBefore, r.FileAfter, nil
}
