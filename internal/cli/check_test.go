package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/config"
)

// lodge check says whether guests' pages can be merged by the host's KSM:
// the config's choice and the host's switch.
func TestMergeStatus(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	on, off := config.Default(), config.Default()
	on.VMM.MergePages = true
	for _, tc := range []struct {
		cfg       config.Config
		ksm       string // "" for no switch
		want, not []string
	}{
		{off, "1", []string{"off (vmm.merge_pages = false)", "KSM is running"}, []string{"offered to KSM (vmm"}},
		{off, "", []string{"off (vmm.merge_pages = false)", "no KSM"}, nil},
		{on, "0", []string{"clones' memory is offered to KSM", "io.lodge.template=false", "KSM is not running"}, nil},
		{on, "2", []string{"offered to KSM", "KSM is 2 on this host"}, nil},
	} {
		os.Remove(run)
		if tc.ksm != "" {
			if err := os.WriteFile(run, []byte(tc.ksm+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got := mergeStatus(tc.cfg, run)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("merge_pages=%t, ksm %q: %q lacks %q", tc.cfg.VMM.MergePages, tc.ksm, got, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(got, n) {
				t.Errorf("merge_pages=%t, ksm %q: %q says %q", tc.cfg.VMM.MergePages, tc.ksm, got, n)
			}
		}
	}
}
