package agent

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lodgeruntime/lodge/internal/guest/directinit"
)

// A warm first step is the first step's binary with directinit.WarmArg, at
// SCHED_IDLE; the agent's own threads keep their policy.
func TestWarmFirstStep(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	exe := filepath.Join(dir, "first-step")
	// Field 41 of /proc/PID/stat is the scheduling policy (5: SCHED_IDLE).
	script := "#!/bin/sh\necho \"$@\" $(cut -d' ' -f41 /proc/$$/stat) > " + out + ".tmp && mv " + out + ".tmp " + out + "\n"
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cs := newContainers(Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), DirectInit: exe}, nil)
	cs.warmFirstStep()
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if b, err = os.ReadFile(out); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if got, want := strings.TrimSpace(string(b)), directinit.WarmArg+" 5"; got != want {
		t.Fatalf("the warm first step ran with %q, want %q (its arguments, SCHED_IDLE)", got, want)
	}
	// The thread that took SCHED_IDLE to start it ends with its goroutine
	// (it stays locked to it), which may take a moment after the start.
	idle := func() (left []string) {
		tasks, _ := filepath.Glob("/proc/self/task/*/stat")
		for _, task := range tasks {
			st, err := os.ReadFile(task)
			if err != nil {
				continue // a thread that ended
			}
			f := bytes.Fields(st[bytes.LastIndexByte(st, ')')+2:])
			if policy := string(f[38]); policy != "0" {
				left = append(left, task+": policy "+policy)
			}
		}
		return left
	}
	left := idle()
	for deadline := time.Now().Add(5 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = idle() {
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("the agent's threads keep a scheduling policy other than 0: %v", left)
	}
}
