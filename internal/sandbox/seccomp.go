package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/seccompbpf"
)

// SeccompCompiler compiles containers' seccomp profiles on the host,
// natively, so that a guest compiles none: a profile's first container in
// a clone of a template otherwise compiles it under the guest's CPU (under
// TCG ~0.3 s, since a clone translates libseccomp's code afresh). The
// helper is the guest agent's own binary (its "seccomp-spec" mode: the same
// libcontainer and libseccomp, the same conversion of the spec), run as an
// unprivileged user with nothing but the profile; the agent keeps the
// program only if its kernel would load it. Each program is kept in Dir,
// by the profile and the helper, for every sandbox of the host.
type SeccompCompiler struct {
	Helper string // the agent's binary; without it the guests compile
	Dir    string // the programs' cache
}

// seccompHelperUID is the user the helper runs as (nobody: it reads only
// the profile, which the capture hands it).
const seccompHelperUID = 65534

// seccompCompileWait bounds a compile on the host (~20-40 ms natively).
const seccompCompileWait = 10 * time.Second

// maxSeccompCached bounds the cache's files (a few KB each); past it the
// cache is emptied and filled again as profiles come.
const maxSeccompCached = 256

// Key is profile's key (the digest of the profile and the helper file's
// identity, which `lodge setup` changes by writing a new file) and the
// profile as the helper reads it.
func (c *SeccompCompiler) Key(profile *specs.LinuxSeccomp) (key string, b []byte, err error) {
	st, err := os.Stat(c.Helper)
	if err != nil {
		return "", nil, fmt.Errorf("seccomp helper: %w (`lodge setup` installs it)", err)
	}
	if b, err = json.Marshal(profile); err != nil {
		return "", nil, err
	}
	h := sha256.New()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		fmt.Fprintf(h, "%d:%d:", sys.Dev, sys.Ino)
	}
	fmt.Fprintf(h, "%d:%d\n", st.Size(), st.ModTime().UnixNano())
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), b, nil
}

// Program returns the program of the profile b whose key is key (Key),
// from the cache or compiled now.
func (c *SeccompCompiler) Program(ctx context.Context, key string, b []byte) (*seccompbpf.Program, error) {
	path := filepath.Join(c.Dir, key)
	if p, err := readSeccompProgram(path); err == nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, seccompCompileWait)
	defer cancel()
	p, err := seccompbpf.Capture(ctx, seccompbpf.Helper{Path: c.Helper, Args: []string{c.Helper, seccompbpf.SpecArg},
		Cred: &syscall.Credential{Uid: seccompHelperUID, Gid: seccompHelperUID}}, b)
	if err != nil {
		return nil, err
	}
	c.keep(path, p) // a program not kept is compiled again
	return p, nil
}

// keep writes p to path, whole or not at all.
func (c *SeccompCompiler) keep(path string, p *seccompbpf.Program) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	if ents, err := os.ReadDir(c.Dir); err == nil && len(ents) >= maxSeccompCached {
		for _, e := range ents {
			os.Remove(filepath.Join(c.Dir, e.Name()))
		}
	}
	f, err := os.CreateTemp(c.Dir, ".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	b := binary.LittleEndian.AppendUint64(nil, uint64(p.Flags))
	if _, err := f.Write(append(b, p.Filter...)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// readSeccompProgram reads a program keep wrote.
func readSeccompProgram(path string) (*seccompbpf.Program, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 8 {
		return nil, errors.New("seccomp cache: a truncated program")
	}
	p := &seccompbpf.Program{Flags: uint(binary.LittleEndian.Uint64(b)), Filter: b[8:]}
	return p, p.Check()
}
