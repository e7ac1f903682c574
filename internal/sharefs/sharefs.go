// Package sharefs gives a sandbox its shared directory: a mount namespace
// of the sandbox's own in which host files are attached (read-only where
// the spec says so, before they are visible), and a read-only view of it
// that the VMM serves to the guest over 9p (OpenView). See share_linux.go
// for the layout and docs/security.md for what the guest can and cannot do
// with it.
package sharefs

import "errors"

// ErrStopped reports a share used after Stop.
var ErrStopped = errors.New("share stopped")
