package runtimecli

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/procid"
)

// The status `state` reports is the record's while its supervisor lives,
// and stopped (pid 0) once it is gone, whatever the record says.
func TestRecordStatus(t *testing.T) {
	t.Parallel()
	me := procid.Of(os.Getpid())
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := procid.ID{Pid: dead.Process.Pid, Start: 1}
	for _, tc := range []struct {
		name     string
		rec      *record // nil: the directory without a record
		want     string
		statePid int
	}{
		{"being created", nil, statusCreating, 0},
		{"created, supervisor alive", &record{Status: statusCreated, Pid: me.Pid, PidStart: me.Start}, statusCreated, me.Pid},
		{"running, supervisor alive", &record{Status: statusRunning, Pid: me.Pid, PidStart: me.Start}, statusRunning, me.Pid},
		{"paused, supervisor alive", &record{Status: statusPaused, Pid: me.Pid, PidStart: me.Start}, statusPaused, me.Pid},
		{"running, supervisor dead", &record{Status: statusRunning, Pid: gone.Pid, PidStart: gone.Start}, statusStopped, 0},
		{"running, pid reused", &record{Status: statusRunning, Pid: me.Pid, PidStart: me.Start + 1}, statusStopped, 0},
		{"creating without a supervisor", &record{Status: statusCreating}, statusStopped, 0},
		{"stopped", &record{Status: statusStopped, Pid: me.Pid, PidStart: me.Start}, statusStopped, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			if err := os.Mkdir(filepath.Join(root, "c1"), 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.rec != nil {
				tc.rec.ID = "c1"
				if err := tc.rec.save(root); err != nil {
					t.Fatal(err)
				}
			}
			r, err := loadRecord(root, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tc.want {
				t.Errorf("status %s, want %s", r.Status, tc.want)
			}
			if st := toStateJSON(r); st.Pid != tc.statePid {
				t.Errorf("state pid %d, want %d", st.Pid, tc.statePid)
			}
		})
	}
}

func TestRecordUnknownAndBadIDs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if _, err := loadRecord(root, "nope"); !errors.Is(err, errNoContainer) {
		t.Errorf("unknown id: %v", err)
	}
	for _, id := range []string{"../etc", "a/b", "", "-x"} {
		var ue usageError
		if _, err := loadRecord(root, id); !errors.As(err, &ue) {
			t.Errorf("id %q: %v, want a usage error", id, err)
		}
	}
}

// A QEMU that outlived its supervisor without being recorded (its owner
// died before it could write the record) goes with the container's state.
func TestCleanupKillsStrayVMM(t *testing.T) {
	root := t.TempDir()
	dir := containerDir(root, "c1")
	if err := os.MkdirAll(filepath.Join(dir, "vm"), 0o700); err != nil {
		t.Fatal(err)
	}
	stray := &exec.Cmd{Path: "/bin/sh", Args: []string{"/usr/bin/qemu-system-x86_64", "-c", "sleep 30; true",
		"file:" + filepath.Join(dir, "vm", "console.log")}}
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- stray.Wait() }()
	defer stray.Process.Kill()
	time.Sleep(100 * time.Millisecond) // until its command line is the one given
	if err := cleanupContainer(root, "c1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("the stray QEMU outlived the container's cleanup")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state left: %v", err)
	}
}
