package agenttest

import (
	"encoding/binary"
	"io"
	"net"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"github.com/lodgeruntime/lodge/internal/transport"
)

// Raw is a hostile agent below ttrpc: it synchronises and multiplexes as
// a real agent does, then answers each request on the RPC stream with
// whatever bytes Reply returns (frames or garbage), so that a test can
// feed the host's client oversized frames, truncated messages, replies of
// the wrong type, or nothing at all. The handshake (Health.Version) gets a
// good reply unless Reply answers it too.
type Raw struct {
	// Reply is called for each request (method as "Service/Method", the
	// request's stream id) and returns the bytes to write back; nil writes
	// nothing. Returning close ends the RPC stream after writing.
	Reply func(method string, streamID uint32) (out []byte, close bool)
	// Handshake, when set, makes Reply answer Version too.
	Handshake bool
}

// Frame is one ttrpc message: header (length, stream id, type, flags) and
// payload; Length is len(payload) unless length >= 0 says otherwise.
func Frame(streamID uint32, typ byte, payload []byte, length int64) []byte {
	h := make([]byte, 10)
	n := uint32(len(payload))
	if length >= 0 {
		n = uint32(length)
	}
	binary.BigEndian.PutUint32(h[0:4], n)
	binary.BigEndian.PutUint32(h[4:8], streamID)
	h[8] = typ
	return append(h, payload...)
}

// ResponseFrame is a well-formed ttrpc response carrying payload as the
// reply message's bytes.
func ResponseFrame(streamID uint32, payload []byte) []byte {
	b, _ := proto.Marshal(&ttrpc.Response{Payload: payload})
	return Frame(streamID, 2, b, -1)
}

// Pipe starts the hostile agent on one end of a pipe and returns the
// host's end.
func (r *Raw) Pipe() net.Conn {
	host, guest := net.Pipe()
	go r.serve(guest)
	return host
}

func (r *Raw) serve(conn net.Conn) {
	sess := guestSession(conn)
	if sess == nil {
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		h, err := transport.ReadHeader(st)
		if err != nil || h.Kind != transport.KindRPC {
			st.Close()
			continue
		}
		go r.answer(st)
	}
}

func (r *Raw) answer(st net.Conn) {
	defer st.Close()
	for {
		var h [10]byte
		if _, err := io.ReadFull(st, h[:]); err != nil {
			return
		}
		n, id := binary.BigEndian.Uint32(h[0:4]), binary.BigEndian.Uint32(h[4:8])
		if n > 4<<20 {
			return
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(st, body); err != nil {
			return
		}
		var req ttrpc.Request
		if proto.Unmarshal(body, &req) != nil {
			return
		}
		method := req.Service + "/" + req.Method
		if method == "lodge.agent.v1.Health/Version" && !r.Handshake {
			b, _ := proto.Marshal(GoodVersion())
			if _, err := st.Write(ResponseFrame(id, b)); err != nil {
				return
			}
			continue
		}
		out, closeAfter := r.Reply(method, id)
		if len(out) > 0 {
			if _, err := st.Write(out); err != nil {
				return
			}
		}
		if closeAfter {
			return
		}
	}
}
