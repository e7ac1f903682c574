// Package guest holds the code that runs inside the microVM (lodge-agent).
// Host code never imports it, and nothing here imports host packages apart
// from the wire-level api/ and internal/transport.
package guest
