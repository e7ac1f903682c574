package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

// Kind says what a multiplexed stream carries.
type Kind uint8

// Stream kinds.
const (
	KindRPC    Kind = 1 // ttrpc requests and replies
	KindStdin  Kind = 2 // host -> process stdin
	KindStdout Kind = 3 // process stdout -> host
	KindStderr Kind = 4 // process stderr -> host
	KindLog    Kind = 5 // agent log records -> host
	// KindPort is a TCP connection to 127.0.0.1:<port> (port forwarding);
	// ContainerID carries the port in decimal. With ExecID empty it is the
	// guest's own network namespace (a pod's); ExecID naming a container
	// asks for that container's namespace, and the agent then answers a
	// status line first (PortStatusOK, or the dial's error) before the
	// connection's bytes (agentv1.CapPortIn).
	KindPort Kind = 6
	// KindChanges carries, from the guest, a container's writable layer as
	// an OCI layer tar (lodge commit and diff); ContainerID names the
	// container. ExecID ChangesWholeRoot asks for its whole root instead
	// (lodge export).
	KindChanges Kind = 7
	// KindWatch carries, from the guest, what changes below a directory
	// of a container (lodge watch, the sandbox service's watches):
	// ContainerID names the container, ExecID WatchRecursive asks for the
	// directories below it too. The host then writes the directory's
	// path, absolute in the container, as one line; the agent answers a
	// status line (WatchStatusOK, or why not), then one JSON event a line
	// (agentv1.CapWatch).
	KindWatch Kind = 8
)

// ChangesWholeRoot is the ExecID of a KindChanges stream that asks for a
// container's whole root.
const ChangesWholeRoot = "root"

// WatchRecursive is the ExecID of a KindWatch stream that watches the
// whole tree below its directory.
const WatchRecursive = "recursive"

// WatchStatusOK is the status line an agent answers a watch stream with
// once its directory is watched; any other line says why not.
const WatchStatusOK = "ok"

// MaxWatchPath bounds the path line of a watch stream (PATH_MAX).
const MaxWatchPath = 4096

func (k Kind) String() string {
	switch k {
	case KindRPC:
		return "rpc"
	case KindStdin:
		return "stdin"
	case KindStdout:
		return "stdout"
	case KindStderr:
		return "stderr"
	case KindLog:
		return "log"
	case KindPort:
		return "port"
	case KindChanges:
		return "changes"
	case KindWatch:
		return "watch"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header opens every stream.
type Header struct {
	Kind        Kind
	ContainerID string // set for stdio kinds
	ExecID      string // "" for a container's init process
}

const (
	headerMagic   = "LDGS"
	headerVersion = 1
	// MaxIDLen bounds container and exec IDs on the wire.
	MaxIDLen = 256
)

// ErrBadHeader reports a stream header that cannot be accepted.
var ErrBadHeader = errors.New("bad stream header")

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]*$`)

// ValidID reports whether id is an acceptable container or exec ID: the
// characters runc allows, at most MaxIDLen bytes.
func ValidID(id string) bool {
	return len(id) <= MaxIDLen && idPattern.MatchString(id)
}

// Validate checks the header's fields.
func (h Header) Validate() error {
	switch h.Kind {
	case KindRPC, KindLog:
		if h.ContainerID != "" || h.ExecID != "" {
			return fmt.Errorf("%w: %s stream carries IDs", ErrBadHeader, h.Kind)
		}
	case KindStdin, KindStdout, KindStderr:
		if !ValidID(h.ContainerID) {
			return fmt.Errorf("%w: invalid container id %q", ErrBadHeader, h.ContainerID)
		}
		if h.ExecID != "" && !ValidID(h.ExecID) {
			return fmt.Errorf("%w: invalid exec id %q", ErrBadHeader, h.ExecID)
		}
	case KindPort:
		if _, _, err := PortOf(h); err != nil {
			return err
		}
	case KindChanges:
		if !ValidID(h.ContainerID) || h.ExecID != "" && h.ExecID != ChangesWholeRoot {
			return fmt.Errorf("%w: changes of %q (exec %q)", ErrBadHeader, h.ContainerID, h.ExecID)
		}
	case KindWatch:
		if !ValidID(h.ContainerID) || h.ExecID != "" && h.ExecID != WatchRecursive {
			return fmt.Errorf("%w: watch in %q (exec %q)", ErrBadHeader, h.ContainerID, h.ExecID)
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrBadHeader, uint8(h.Kind))
	}
	return nil
}

// PortHeader opens a port-forwarding stream to port in the network
// namespace of container ("": the guest's own).
func PortHeader(container string, port uint16) Header {
	return Header{Kind: KindPort, ContainerID: strconv.Itoa(int(port)), ExecID: container}
}

// PortStatusOK is the status line an agent answers a port stream into a
// container with when its connection is made; any other line is the
// dial's error.
const PortStatusOK = "ok"

// PortOf returns the port a KindPort header names, and the container in
// whose network namespace ("": the guest's own).
func PortOf(h Header) (port uint16, container string, err error) {
	n, err := strconv.ParseUint(h.ContainerID, 10, 16)
	if err != nil || n == 0 || h.ContainerID != strconv.FormatUint(n, 10) {
		return 0, "", fmt.Errorf("%w: bad port %q", ErrBadHeader, h.ContainerID)
	}
	if h.ExecID != "" && !ValidID(h.ExecID) {
		return 0, "", fmt.Errorf("%w: port %d in invalid container id %q", ErrBadHeader, n, h.ExecID)
	}
	return uint16(n), h.ExecID, nil
}

// MarshalBinary encodes the header:
// "LDGS" | version u8 | kind u8 | len u16 | container id | len u16 | exec id.
func (h Header) MarshalBinary() ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 10+len(h.ContainerID)+len(h.ExecID))
	b = append(b, headerMagic...)
	b = append(b, headerVersion, byte(h.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.ContainerID)))
	b = append(b, h.ContainerID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.ExecID)))
	b = append(b, h.ExecID...)
	return b, nil
}

// WriteHeader writes h to w.
func WriteHeader(w io.Writer, h Header) error {
	b, err := h.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadHeader reads and validates one header from r. It reads at most
// 10+2*MaxIDLen bytes.
func ReadHeader(r io.Reader) (Header, error) {
	var fixed [6]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if string(fixed[:4]) != headerMagic {
		return Header{}, fmt.Errorf("%w: bad magic", ErrBadHeader)
	}
	if fixed[4] != headerVersion {
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrBadHeader, fixed[4], headerVersion)
	}
	h := Header{Kind: Kind(fixed[5])}
	var err error
	if h.ContainerID, err = readString(r); err != nil {
		return Header{}, err
	}
	if h.ExecID, err = readString(r); err != nil {
		return Header{}, err
	}
	return h, h.Validate()
}

func readString(r io.Reader) (string, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	l := binary.BigEndian.Uint16(n[:])
	if l > MaxIDLen {
		return "", fmt.Errorf("%w: id of %d bytes", ErrBadHeader, l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	return string(b), nil
}
