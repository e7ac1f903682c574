package runtimecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// cmdSpec writes runc's default config.json into the bundle.
func cmdSpec(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("spec")
	bundle := fs.String("bundle", ".", "bundle directory")
	fs.StringVar(bundle, "b", ".", "bundle directory")
	rootless := fs.Bool("rootless", false, "a spec for a rootless container")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{"spec: takes no arguments"}
	}
	s := oci.DefaultSpec()
	if *rootless {
		return errors.New("spec --rootless: Lodge runs containers as root inside their VM; rootless specs are not supported")
	}
	path := filepath.Join(*bundle, "config.json")
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("file %s exists. Remove it first", path)
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o666)
}

// cmdFeatures prints the OCI features document.
func cmdFeatures(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	if err := parse(newFlagSet("features"), args); err != nil {
		return err
	}
	return printJSON(env.IO.Out, oci.Features())
}
