package procid

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Strays finds a VMM process that names a directory in its arguments,
// and not another program that names it, nor a VMM of another directory.
func TestStrays(t *testing.T) {
	dir := t.TempDir()
	start := func(argv0 string, args ...string) *exec.Cmd {
		cmd := &exec.Cmd{Path: "/bin/sh", Args: append([]string{argv0, "-c", "sleep 30; true"}, args...)}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	vmm := start("/usr/bin/qemu-system-x86_64", "-serial", "file:"+filepath.Join(dir, "console.log"))
	start("/bin/bash", filepath.Join(dir, "console.log"))                             // not a VMM
	start("/usr/bin/qemu-system-x86_64", "-serial", "file:"+dir+"-other/console.log") // another directory
	var got []ID
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = Strays(dir, "qemu-system-", "virtiofsd"); len(got) > 0 {
			break
		}
	}
	if len(got) != 1 || got[0].Pid != vmm.Process.Pid {
		t.Fatalf("strays of %s: %v, want only %d", dir, got, vmm.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	KillAll(ctx, got)
	if got[0].Alive() {
		t.Fatal("the stray outlived KillAll")
	}
}

func TestMentions(t *testing.T) {
	t.Parallel()
	for arg, want := range map[string]bool{
		"/run/x": true, "/run/x/console.log": true, "file:/run/x/console.log": true,
		"path=/run/x,readonly=on": true, "/run/xy": false, "/run/x-other/a": false, "/run": false,
		"/run/xy:/run/x/a": true,
	} {
		if got := mentions(arg, "/run/x"); got != want {
			t.Errorf("mentions(%q): %v, want %v", arg, got, want)
		}
	}
}
