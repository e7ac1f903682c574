package runtimecli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runMain runs the command line with its streams captured.
func runMain(t *testing.T, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	status = Main(context.Background(), args, Env{IO: IO{In: strings.NewReader(""), Out: &out, Err: &errb}})
	return status, out.String(), errb.String()
}

// The last error-level entry of a JSON --log, read the way containerd's
// runc shim reads it (go-runc: one JSON object per line, level "error").
func lastLoggedError(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var msg string
	dec := json.NewDecoder(bytes.NewReader(b))
	for dec.More() {
		var e struct {
			Level, Msg string
			Time       string
		}
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("--log is not runc's JSON (%v): %q", err, b)
		}
		if e.Time == "" {
			t.Errorf("entry without a time: %q", b)
		}
		if e.Level == "error" {
			msg = e.Msg
		}
	}
	return msg
}

func TestErrorsGoToTheLogAsRuncWritesThem(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		want   string
	}{
		{"missing container", []string{"state", "no-such"}, 1, "no-such"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"bad flag of a command", []string{"kill", "--nope", "x"}, 2, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logf := filepath.Join(t.TempDir(), "log.json")
			args := append([]string{"--root", root, "--log", logf, "--log-format", "json"}, tc.args...)
			status, _, stderr := runMain(t, args...)
			if status != tc.status {
				t.Errorf("status %d, want %d (stderr %q)", status, tc.status, stderr)
			}
			got := lastLoggedError(t, logf)
			if !strings.Contains(got, tc.want) {
				t.Errorf("logged error %q, want it to name %q", got, tc.want)
			}
			// runc writes the error to stderr as well.
			if !strings.Contains(stderr, got) {
				t.Errorf("stderr %q lacks the logged error %q", stderr, got)
			}
		})
	}
}

func TestTextLogIsLogfmtWithRuncLevels(t *testing.T) {
	logf := filepath.Join(t.TempDir(), "log")
	runMain(t, "--root", t.TempDir(), "--log", logf, "state", "no-such")
	b, err := os.ReadFile(logf)
	if err != nil {
		t.Fatal(err)
	}
	if line := string(b); !strings.Contains(line, "level=error") || !strings.Contains(line, "no-such") || !strings.HasPrefix(line, "time=") {
		t.Errorf("text log %q: want time=... level=error msg=...", line)
	}
}

func TestNoLogFileErrorsOnlyOnStderr(t *testing.T) {
	status, _, stderr := runMain(t, "--root", t.TempDir(), "state", "no-such")
	if status != 1 || strings.Count(stderr, "no-such") != 1 {
		t.Errorf("status %d, stderr %q: want the error once", status, stderr)
	}
}

func TestRuncLevelNames(t *testing.T) {
	logf := filepath.Join(t.TempDir(), "log.json")
	log, closeLog, err := newLogger(globals{logFile: logf, logFormat: "json", debug: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	closeLog()
	b, _ := os.ReadFile(logf)
	var levels []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct{ Level string }
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		levels = append(levels, e.Level)
	}
	if got := strings.Join(levels, ","); got != "debug,info,warning,error" {
		t.Errorf("levels %s, want logrus's debug,info,warning,error", got)
	}
}
