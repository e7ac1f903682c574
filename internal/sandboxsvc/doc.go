// Package sandboxsvc is Lodge's sandbox service for untrusted code: an
// HTTP API (on a unix socket, or on loopback with a token) that platforms
// running uploaded programs or code written by AI agents call to make a
// sandbox, run commands in it, read and write its files, extend its life
// and remove it. Each sandbox is a `lodge` container, so each has a microVM
// of its own and starts as a clone of a booted template where it can.
//
// The service keeps one record per sandbox (its image, its deadline, the
// caller's metadata) and removes a sandbox when its deadline passes, when
// asked, or when the service finds it without a record. It drives the
// containers through a Runner (the lodge command line), never through the
// sandbox or VM packages, so that what it does a person can do by hand.
package sandboxsvc
