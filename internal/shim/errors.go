package shim

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lodgeruntime/lodge/internal/agent"
	"github.com/lodgeruntime/lodge/internal/sandbox"
)

// Error kinds the service returns; toWire maps them to codes.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrPrecondition = errors.New("failed precondition")
	ErrInvalid      = errors.New("invalid argument")
	ErrNotImpl      = errors.New("not implemented")
)

// toWire turns an error into a ttrpc status at the RPC edge. The guest's
// errors arrive here as the agent package's kinds (never as the guest's own
// status), so the code is the host's choice.
func toWire(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, agent.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists), errors.Is(err, sandbox.ErrExists), errors.Is(err, agent.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrPrecondition), errors.Is(err, agent.ErrState):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrInvalid), errors.Is(err, sandbox.ErrUnsupported), errors.Is(err, agent.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotImpl), errors.Is(err, agent.ErrUnimplemented):
		code = codes.Unimplemented
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, agent.ErrNoAnswer):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// FromWire turns a ttrpc status back into the service's error kinds, for
// clients of the service.
func FromWire(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	kind := map[codes.Code]error{
		codes.NotFound: ErrNotFound, codes.AlreadyExists: ErrExists,
		codes.FailedPrecondition: ErrPrecondition, codes.InvalidArgument: ErrInvalid,
		codes.Unimplemented: ErrNotImpl,
	}[st.Code()]
	if kind == nil {
		return errors.New(st.Message())
	}
	return &wireError{kind: kind, msg: st.Message()}
}

// wireError is an error from the task service: its message, matched with
// errors.Is against its kind.
type wireError struct {
	kind error
	msg  string
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.kind }
