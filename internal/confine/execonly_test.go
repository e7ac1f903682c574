package confine

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// A program started from an execute-only copy by a thread without
// capabilities is non-dumpable: another uid-0 process without
// capabilities (another sandbox's QEMU) cannot read its /proc files,
// which it can for the same program started from the original.
func TestExecOnlyCopyMakesNonDumpable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	cp, err := ExecOnlyCopy(sleep, dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(cp); err != nil || st.Mode().Perm() != 0o111 || filepath.Base(cp) != filepath.Base(sleep) {
		t.Fatalf("copy %s: %v %v", cp, st.Mode(), err)
	}
	if again, err := ExecOnlyCopy(sleep, dir); err != nil || again != cp {
		t.Fatalf("second copy: %s %v, want %s again", again, err, cp)
	}
	readable := func(pid int) bool {
		probe := exec.Command("/bin/cat", "/proc/"+strconv.Itoa(pid)+"/environ")
		probe.Stdout, probe.Stderr = io.Discard, io.Discard
		wait, err := Start(probe, func() error { return DropCaps(nil) })
		if err != nil {
			t.Fatal(err)
		}
		return <-wait == nil
	}
	for _, tc := range []struct {
		path     string
		readable bool
	}{{sleep, true}, {cp, false}} {
		cmd := exec.Command(tc.path, "30")
		wait, err := StartConfined(cmd, nil, nil)
		if err != nil {
			t.Fatalf("start %s: %v", tc.path, err)
		}
		if got := readable(cmd.Process.Pid); got != tc.readable {
			t.Errorf("started from %s: another capless root process reads its environ: %v, want %v", tc.path, got, tc.readable)
		}
		cmd.Process.Kill()
		<-wait
	}
}
