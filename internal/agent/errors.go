package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of error a call to the guest ends with. The guest's status code
// picks one of these and nothing else: a guest cannot choose the code that
// containerd or the CLI sees, and its words arrive capped and escaped.
var (
	ErrNotFound      = errors.New("not found in the guest")
	ErrExists        = errors.New("already exists in the guest")
	ErrInvalid       = errors.New("refused by the guest")
	ErrState         = errors.New("not possible in the guest now")
	ErrUnimplemented = errors.New("not supported by the guest agent")
	ErrGuest         = errors.New("failed in the guest")
	// ErrNoAnswer: the guest did not answer within the call's deadline.
	ErrNoAnswer = errors.New("the guest agent did not answer")
	// ErrGone: the channel to the agent closed (the VM is going away).
	ErrGone = errors.New("the guest agent's channel closed")
)

// maxGuestText bounds the guest's words in an error.
const maxGuestText = 1024

// guestError is an error the guest reported: its kind and its words.
type guestError struct {
	kind error
	text string
}

func (e *guestError) Error() string { return e.text }
func (e *guestError) Unwrap() error { return e.kind }

// fromGuest turns what a call to the guest returned into one of the kinds
// above. Errors of the host's own (its context, the channel) keep theirs.
func fromGuest(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("%w: %s: %w", ErrNoAnswer, method, err)
		case errors.Is(err, ttrpc.ErrClosed), errors.Is(err, net.ErrClosed), errors.Is(err, io.EOF):
			return fmt.Errorf("%w: %s: %w", ErrGone, method, err)
		}
		return fmt.Errorf("agent: %s: %w", method, err)
	}
	kind := ErrGuest
	switch st.Code() {
	case codes.NotFound:
		kind = ErrNotFound
	case codes.AlreadyExists:
		kind = ErrExists
	case codes.InvalidArgument:
		kind = ErrInvalid
	case codes.FailedPrecondition:
		kind = ErrState
	case codes.Unimplemented:
		kind = ErrUnimplemented
	case codes.DeadlineExceeded, codes.Canceled:
		// ttrpc reports the host's own deadline as a status too.
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %s: %w", ErrNoAnswer, method, ctx.Err())
		}
	}
	return &guestError{kind: kind, text: GuestText(st.Message())}
}

// GuestText makes text from the guest fit to log or show: at most
// maxGuestText bytes, valid UTF-8, control and other non-printing
// characters written as escapes (\x1b, \u202e), so that it can neither
// flood a log nor move a terminal's cursor.
func GuestText(s string) string {
	var b strings.Builder
	cut := false
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && n == 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\':
			piece = `\\`
		case r == ' ' || unicode.IsPrint(r):
			piece = s[i : i+n]
		case r < 0x80:
			piece = fmt.Sprintf(`\x%02x`, r)
		default:
			piece = fmt.Sprintf(`\u%04x`, r)
		}
		if b.Len()+len(piece) > maxGuestText {
			cut = true
			break
		}
		b.WriteString(piece)
		i += n
	}
	if cut {
		fmt.Fprintf(&b, "... (%d bytes from the guest cut)", len(s))
	}
	return b.String()
}

// Deadlines of calls to the guest. A call the caller bounds more tightly
// keeps the caller's deadline.
type Deadlines struct {
	// Call bounds a call the agent answers at once (signal, pause, stats,
	// pids, delete...).
	Call time.Duration
	// Create bounds creating a container, which mounts its rootfs and
	// volumes and runs libcontainer's setup.
	Create time.Duration
}

// DefaultDeadlines leave room for a loaded TCG guest.
var DefaultDeadlines = Deadlines{Call: time.Minute, Create: 3 * time.Minute}

// noDeadline are the calls that wait for as long as the caller lets them:
// a process's exit, and the handshake, which waits for the guest to boot.
var noDeadline = map[string]bool{
	"/lodge.agent.v1.Containers/Wait": true,
	"/lodge.agent.v1.Health/Version":  true,
}

// edge is the client's ttrpc interceptor: each call gets its deadline, and
// its error is mapped to the kinds above.
func (d Deadlines) edge(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoker ttrpc.Invoker) error {
	if !noDeadline[info.FullMethod] {
		limit := d.Call
		if info.FullMethod == "/lodge.agent.v1.Containers/Create" {
			limit = d.Create
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	err := invoker(ctx, req, resp)
	if err == nil && resp.Status != nil && resp.Status.Code != int32(codes.OK) {
		// ttrpc turns the guest's status into an error after the
		// interceptors; it is mapped here instead.
		err = status.ErrorProto(resp.Status)
	}
	return fromGuest(ctx, method, err)
}
