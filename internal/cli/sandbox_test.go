package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSandboxListener(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		listen string
		token  bool
		want   string
	}{
		{"tcp://127.0.0.1:0", false, "--token-file"},
		{"unix://rel.sock", false, "ABSOLUTE"},
		{"http://127.0.0.1:80", true, "want unix://"},
	} {
		if _, _, err := sandboxListener(tc.listen, tc.token); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--listen %s (token %v): %v, want an error naming %q", tc.listen, tc.token, err, tc.want)
		}
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, cleanup, err := sandboxListener("unix://"+sock, false)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v %v: want mode 0600", fi.Mode(), err)
	}
	if _, _, err := sandboxListener("unix://"+sock, false); err == nil || !strings.Contains(err.Error(), "already listens") {
		t.Errorf("a second service on the same socket: %v", err)
	}
	l.Close()
	cleanup()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after cleanup: %v", err)
	}
	l, cleanup, err = sandboxListener("tcp://127.0.0.1:0", true)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	cleanup()
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokens")
	os.WriteFile(p, []byte("alice 0123456789abcdef\n"), 0o644)
	os.Chmod(p, 0o644)
	if _, err := readSecret("--tenants-file", p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a file others may read: %v", err)
	}
	os.Chmod(p, 0o600)
	if b, err := readSecret("--tenants-file", p); err != nil || string(b) != "alice 0123456789abcdef\n" {
		t.Errorf("a file of its owner's: %q %v", b, err)
	}
	if _, err := readSecret("--token-file", filepath.Join(dir, "none")); err == nil {
		t.Error("a missing file is taken")
	}
}
