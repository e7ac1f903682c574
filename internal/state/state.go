// Package state keeps small JSON records on disk safely: writes go to a
// temporary file that is renamed over the old one, so a reader sees the
// old record or the new one, never half of one.
package state

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxRecord bounds what Read accepts.
const maxRecord = 1 << 20

// Write stores v as JSON at path atomically.
func Write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Read loads the JSON record at path into v.
func Read(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecord+1))
	if err != nil {
		return err
	}
	if len(b) > maxRecord {
		return fmt.Errorf("%s: record over %d bytes", path, maxRecord)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
