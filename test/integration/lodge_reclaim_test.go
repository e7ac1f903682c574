package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// vmPSS is the host PSS, in KiB, of the processes serving container id's
// VM (QEMU and what its state names).
func vmPSS(t *testing.T, id string) int {
	t.Helper()
	var st struct {
		VMProcs []struct {
			Pid int `json:"pid"`
		} `json:"vm_procs"`
	}
	b, err := os.ReadFile(filepath.Join("/run/lodge/lodge", id, "state.json"))
	if err != nil || json.Unmarshal(b, &st) != nil || len(st.VMProcs) == 0 {
		t.Fatalf("runtime state of %s: %v %s", id, err, b)
	}
	total := 0
	for _, p := range st.VMProcs {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/smaps_rollup")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^Pss:\s+(\d+) kB`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("no Pss in %s", b)
		}
		n, _ := strconv.Atoi(string(m[1]))
		total += n
	}
	return total
}

// TestLodgePauseReclaim: lodge pause --reclaim drops the file cache a
// container's reads left in its guest, and the host gets that memory back
// (free page reporting) while the container is paused; its files read
// back whole after unpause. A second round does the same (the guest's
// kernel once blocked the agent's second reclaim for good).
func TestLodgePauseReclaim(t *testing.T) {
	l := newLodgeCLI(t)
	ref, _ := testImage(t)
	l.must("pull", ref)
	id := strings.TrimSpace(l.must("run", "-d", ref, "sleep", "600"))
	defer l.run("", "rm", "-f", id)
	sum := strings.Fields(l.must("exec", id, "sh", "-c", "dd if=/dev/urandom of=/tmp/big bs=1M count=40 2>/dev/null && sync && md5sum /tmp/big"))[0]
	figure := regexp.MustCompile(`file cache ([\d.]+)MB -> ([\d.]+)(k?B|MB)\n`)
	for round := range 2 {
		l.must("exec", id, "sh", "-c", "cat /tmp/big > /dev/null")
		before := vmPSS(t, id)
		out := l.run("", "pause", "--reclaim", id)
		m := figure.FindStringSubmatch(out.stderr)
		if out.code != 0 || m == nil {
			t.Fatalf("round %d: pause --reclaim: exit %d, %q", round, out.code, out.stderr)
		}
		from, _ := strconv.ParseFloat(m[1], 64)
		to, _ := strconv.ParseFloat(m[2], 64)
		if m[3] != "MB" {
			to /= 1000
		}
		if from < 40 || to > 8 {
			t.Errorf("round %d: file cache %s, want from 40 MB or more to under 8", round, strings.TrimSpace(m[0]))
		}
		if st := strings.TrimSpace(l.must("ps", "--filter", "id="+id, "--format", "{{.Status}}")); st != "Up (Paused)" {
			t.Errorf("round %d: after pause --reclaim: %q", round, st)
		}
		var after int
		l.eventually("the host gets the memory back", func() bool {
			after = vmPSS(t, id)
			return before-after >= 24<<10
		})
		t.Logf("round %d: file cache %s MB -> %s %s; VM's host PSS %d -> %d MiB", round, m[1], m[2], m[3], before>>10, after>>10)
		l.must("unpause", id)
		if got := strings.Fields(l.must("exec", id, "md5sum", "/tmp/big"))[0]; got != sum {
			t.Fatalf("round %d: /tmp/big reads back as %s, want %s", round, got, sum)
		}
	}
}
