package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsoleTail(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "console.log")
	var lines []string
	for i := range 30 {
		lines = append(lines, "line "+string(rune('a'+i%26)))
	}
	lines = append(lines, "evil \x1b]0;pwned\x07 \x1b[2J end")
	os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	got := consoleTail(p, 3)
	if strings.Count(got, "\n") != 2 || strings.ContainsAny(got, "\x1b\x07") || !strings.HasSuffix(got, "end") {
		t.Fatalf("consoleTail = %q", got)
	}
	if got := consoleTail(filepath.Join(t.TempDir(), "none"), 3); !strings.Contains(got, "no console log") {
		t.Fatalf("missing log: %q", got)
	}
}

// FuzzPrintable: whatever the guest writes to its console, what reaches
// the user's terminal has no control characters but newline and tab.
func FuzzPrintable(f *testing.F) {
	f.Add([]byte("Kernel panic\x1b[31m\r\n\x9b2J\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, r := range printable(b) {
			if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
				t.Fatalf("control character %U survived", r)
			}
		}
	})
}
