// Package oci loads and checks OCI bundles (config.json + root filesystem)
// on the host, with errors that say what to fix.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrBadBundle reports a bundle that cannot be run.
var ErrBadBundle = errors.New("invalid bundle")

// maxConfig bounds config.json.
const maxConfig = 4 << 20

// Bundle is a loaded OCI bundle.
type Bundle struct {
	Dir    string // absolute
	Spec   *specs.Spec
	Rootfs string // absolute host path of root.path
}

// LoadBundle reads dir/config.json and checks what Lodge needs from it.
func LoadBundle(dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(abs, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no config.json (an OCI bundle is a directory with config.json and a root filesystem; `runc spec` writes a default one)", ErrBadBundle, abs)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBundle, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read config.json: %w", ErrBadBundle, err)
	}
	if len(b) > maxConfig {
		return nil, fmt.Errorf("%w: config.json is over %d bytes", ErrBadBundle, maxConfig)
	}
	spec, err := ParseSpec(b)
	if err != nil {
		return nil, err
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(abs, rootfs)
	}
	st, err := os.Stat(rootfs)
	if err != nil {
		return nil, fmt.Errorf("%w: root filesystem %s: %w (root.path in config.json must name a directory)", ErrBadBundle, rootfs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: root filesystem %s is not a directory", ErrBadBundle, rootfs)
	}
	return &Bundle{Dir: abs, Spec: spec, Rootfs: rootfs}, nil
}

// ParseSpec decodes and checks config.json contents.
func ParseSpec(b []byte) (*specs.Spec, error) {
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%w: config.json is not valid JSON: %w", ErrBadBundle, err)
	}
	if spec.Version == "" {
		return nil, fmt.Errorf("%w: config.json has no ociVersion", ErrBadBundle)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("%w: config.json has no root.path", ErrBadBundle)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("%w: config.json has no process", ErrBadBundle)
	}
	if len(spec.Process.Args) == 0 || spec.Process.Args[0] == "" {
		return nil, fmt.Errorf("%w: process.args in config.json is empty: name the program to run", ErrBadBundle)
	}
	if spec.Process.Cwd == "" || !filepath.IsAbs(spec.Process.Cwd) {
		return nil, fmt.Errorf("%w: process.cwd %q must be an absolute path", ErrBadBundle, spec.Process.Cwd)
	}
	return &spec, nil
}
