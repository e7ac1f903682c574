package transport

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	for _, h := range []Header{
		{Kind: KindRPC},
		{Kind: KindLog},
		{Kind: KindStdin, ContainerID: "c1"},
		{Kind: KindStdout, ContainerID: "abc.def_1-2", ExecID: "e1"},
		{Kind: KindStderr, ContainerID: strings.Repeat("a", MaxIDLen)},
		PortHeader("", 8080),
		PortHeader("c1", 8080),
		{Kind: KindChanges, ContainerID: "c1"},
		{Kind: KindChanges, ContainerID: "c1", ExecID: ChangesWholeRoot},
		{Kind: KindWatch, ContainerID: "c1"},
		{Kind: KindWatch, ContainerID: "c1", ExecID: WatchRecursive},
	} {
		t.Run(h.Kind.String(), func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteHeader(&buf, h); err != nil {
				t.Fatal(err)
			}
			got, err := ReadHeader(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(h, got); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHeaderRejects(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]Header{
		"unknown kind":      {Kind: 9},
		"rpc with id":       {Kind: KindRPC, ContainerID: "x"},
		"stdio without id":  {Kind: KindStdout},
		"path in id":        {Kind: KindStdout, ContainerID: "../etc"},
		"id too long":       {Kind: KindStdin, ContainerID: strings.Repeat("a", MaxIDLen+1)},
		"bad exec id":       {Kind: KindStdin, ContainerID: "c", ExecID: "a/b"},
		"leading separator": {Kind: KindStdin, ContainerID: "-c"},
		"port zero":         {Kind: KindPort, ContainerID: "0"},
		"port too big":      {Kind: KindPort, ContainerID: "65536"},
		"port not decimal":  {Kind: KindPort, ContainerID: "0x50"},
		"port leading zero": {Kind: KindPort, ContainerID: "080"},
		"port in bad id":    {Kind: KindPort, ContainerID: "80", ExecID: "../c"},
		"changes no id":     {Kind: KindChanges},
		"changes with exec": {Kind: KindChanges, ContainerID: "c", ExecID: "e"},
		"watch no id":       {Kind: KindWatch},
		"watch with exec":   {Kind: KindWatch, ContainerID: "c", ExecID: "e"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := h.MarshalBinary(); !errors.Is(err, ErrBadHeader) {
				t.Fatalf("MarshalBinary(%+v) = %v, want ErrBadHeader", h, err)
			}
		})
	}
	for name, raw := range map[string][]byte{
		"empty":     nil,
		"bad magic": []byte("XXXX\x01\x01\x00\x00\x00\x00"),
		"version":   []byte("LDGS\x02\x01\x00\x00\x00\x00"),
		"huge len":  []byte("LDGS\x01\x03\xff\xff"),
		"truncated": []byte("LDGS\x01\x03\x00\x05ab"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadHeader(bytes.NewReader(raw)); !errors.Is(err, ErrBadHeader) {
				t.Fatalf("ReadHeader(%q) = %v, want ErrBadHeader", raw, err)
			}
		})
	}
}

// FuzzReadHeader feeds arbitrary bytes to the header decoder: it must never
// panic, and whatever it accepts must re-encode to the bytes it consumed.
func FuzzReadHeader(f *testing.F) {
	for _, h := range []Header{{Kind: KindRPC}, {Kind: KindStdout, ContainerID: "c", ExecID: "e"}} {
		b, _ := h.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte("LDGS\x01\x03\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadHeader(r)
		if err != nil {
			return
		}
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted header %+v does not re-encode: %v", h, err)
		}
		if consumed := len(data) - r.Len(); !bytes.Equal(b, data[:consumed]) {
			t.Fatalf("re-encoded %q, consumed %q", b, data[:consumed])
		}
	})
}

// TestMuxStreams checks that the multiplexer keeps streams apart and that
// half-close (stdin EOF) reaches the other side while the reverse direction
// stays open.
func TestMuxStreams(t *testing.T) {
	t.Parallel()
	hc, gc := net.Pipe()
	host, err := HostSession(hc)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	guest, err := GuestSession(gc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()

	go func() {
		for {
			st, err := guest.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				h, err := ReadHeader(st)
				if err != nil {
					st.Close()
					return
				}
				var in bytes.Buffer
				in.ReadFrom(st) // until the host's half-close
				st.Write([]byte(h.Kind.String() + ":" + h.ContainerID + ":" + in.String()))
				st.Close()
			}()
		}
	}()

	for _, h := range []Header{{Kind: KindStdin, ContainerID: "a"}, {Kind: KindStdout, ContainerID: "b"}} {
		st, err := Open(host, h)
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("payload-" + h.ContainerID))
		st.Close() // yamux Close is a half-close: reads go on
		var out bytes.Buffer
		if _, err := out.ReadFrom(st); err != nil {
			t.Fatal(err)
		}
		want := h.Kind.String() + ":" + h.ContainerID + ":payload-" + h.ContainerID
		if out.String() != want {
			t.Fatalf("got %q, want %q", out.String(), want)
		}
	}
}

func TestWatchEventCheck(t *testing.T) {
	for _, e := range []WatchEvent{{Type: "create", Name: "a/b"}, {Type: "remove", Dir: true}, {Type: "overflow"}, {Type: "write", Name: "..a"}} {
		if err := e.Check(); err != nil {
			t.Errorf("%+v: %v", e, err)
		}
	}
	for _, e := range []WatchEvent{{Type: "exec"}, {Type: ""}, {Type: "create", Name: "/etc/passwd"}, {Type: "create", Name: "../x"},
		{Type: "create", Name: ".."}, {Type: "create", Name: "."}, {Type: "create", Name: "a//b"}, {Type: "create", Name: "a/../../b"},
		{Type: "create", Name: "a\x00b"}, {Type: "create", Name: strings.Repeat("a", MaxWatchPath+1)}} {
		if err := e.Check(); !errors.Is(err, ErrBadEvent) {
			t.Errorf("%+v: %v, want ErrBadEvent", e, err)
		}
	}
}
