// Package transport carries the host <-> agent channel: one byte stream
// (a virtio-serial port backed by a unix socket, or an AF_VSOCK connection)
// with a yamux stream multiplexer on top, so that RPCs and every stdio stream
// travel on streams of their own.
//
// Every stream is opened by the host and starts with a Header that tells the
// agent what the stream is for:
//
//	host                                   agent (guest)
//	 |-- byte stream (serial or vsock) ------>|
//	 |   yamux client            yamux server |
//	 |-- open stream, Header{KindRPC} ------->|  ttrpc server
//	 |-- open stream, Header{KindStdin, c} -->|  held until Create(c) takes it
//	 |-- open stream, Header{KindStdout, c} ->|
//	 |-- ttrpc Create(c) / Start / Wait ----->|
//	 |<----------- stdout bytes, then EOF ----|  (EOF before Wait returns)
//
// The host never parses headers (it only writes them); the agent parses them
// with ReadHeader, which bounds every length.
package transport
