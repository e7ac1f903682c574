// Command stdio measures a container's stdio under load: a container writes
// 200 MB to stdout and 50 MB to stderr at once (two `cat`s of files in its
// rootfs), run by `lodge-runtime run`, by the same with the output sent to
// /dev/null in the guest (the VM's own cost), and, as the baseline, by
// `runc run` on the same rootfs. Each run checks that both streams arrive whole and unmixed, and
// samples the peak memory (VmHWM) of the process that relays them for
// lodge-runtime (its supervisor). It prints medians.
//
//	go run ./bench/stdio -bin bin -runs 3
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lodgeruntime/lodge/internal/testbundle"
)

// The two streams: lines of 16 bytes each, different on each stream.
const (
	outLine = "o123456789abcde"
	errLine = "E123456789abcde"
)

func main() {
	bin := flag.String("bin", "bin", "directory with lodge-runtime")
	runs := flag.Int("runs", 3, "runs of each runtime")
	outMB := flag.Int("out", 200, "MB on stdout")
	errMB := flag.Int("err", 50, "MB on stderr")
	flag.Parse()
	if err := run(*bin, *runs, int64(*outMB)<<20, int64(*errMB)<<20); err != nil {
		fmt.Fprintln(os.Stderr, "stdio bench:", err)
		os.Exit(1)
	}
}

func run(bin string, runs int, outN, errN int64) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("/var/tmp", "lodge-stdio-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	if err := testbundle.Rootfs(rootfs); err != nil {
		return err
	}
	// The streams' bytes are files of the rootfs, so that what is measured
	// is their way out, not a generator's CPU time in an emulated guest.
	if err := patternFile(filepath.Join(rootfs, "out.dat"), outLine, outN); err != nil {
		return err
	}
	if err := patternFile(filepath.Join(rootfs, "err.dat"), errLine, errN); err != nil {
		return err
	}
	relayed, discarded := filepath.Join(work, "relayed"), filepath.Join(work, "discarded")
	for dir, script := range map[string]string{
		relayed:   "cat /out.dat & cat /err.dat >&2; wait",
		discarded: "cat /out.dat >/dev/null & cat /err.dat >/dev/null; wait",
	} {
		spec := testbundle.Spec("sh", "-c", script)
		spec.Root.Path = rootfs
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := testbundle.WriteSpec(dir, spec); err != nil {
			return err
		}
	}
	lodge := func(bundle string) func(root, id string) []string {
		return func(root, id string) []string {
			return []string{filepath.Join(bin, "lodge-runtime"), "--root", root, "run", "--bundle", bundle, id}
		}
	}
	rows := []struct {
		name       string
		argv       func(root, id string) []string
		relayer    string // a word of the relaying process's command line
		outN, errN int64  // what reaches the host
	}{
		{"lodge-runtime", lodge(relayed), "__supervise", outN, errN},
		{"  (in guest)", lodge(discarded), "", 0, 0},
		{"runc", func(root, id string) []string {
			return []string{"runc", "--root", root, "run", "--bundle", relayed, id}
		}, "", outN, errN},
	}
	total := float64(outN+errN) / 1e6
	fmt.Printf("stdio: %.0f MB on stdout and %.0f MB on stderr at once (cat of files in the rootfs), %d runs each, medians\n",
		float64(outN)/1e6, float64(errN)/1e6, runs)
	fmt.Println("  (in guest): the same container writing to /dev/null in the guest: reading the files and running the VM")
	var base float64
	for _, rt := range rows {
		if _, err := exec.LookPath(rt.argv("", "")[0]); err != nil {
			fmt.Printf("%-14s skipped: %v\n", rt.name, err)
			continue
		}
		var secs, peaks []float64
		for i := 0; i < runs; i++ {
			root, err := os.MkdirTemp("", "lodge-stdio-root-")
			if err != nil {
				return err
			}
			id := fmt.Sprintf("stdio-%d-%d", os.Getpid(), i)
			d, peak, err := once(rt.argv(root, id), rt.relayer, id, rt.outN, rt.errN)
			os.RemoveAll(root)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", rt.name, i+1, err)
			}
			secs = append(secs, d.Seconds())
			peaks = append(peaks, float64(peak)/1024)
		}
		s := median(secs)
		line := fmt.Sprintf("%-14s %6.1f s  %6.1f MB/s", rt.name, s, total/s)
		if rt.relayer != "" {
			line += fmt.Sprintf("  relay peak RSS %.1f MiB", median(peaks))
		}
		if rt.name == "runc" && base > 0 {
			line += fmt.Sprintf("  (lodge-runtime takes %.2fx runc's time)", base/s)
		}
		if rt.name == "lodge-runtime" {
			base = s
		}
		fmt.Println(line)
	}
	return nil
}

// patternFile writes n bytes of line+"\n" repeated to path.
func patternFile(path, line string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	unit := []byte(line + "\n")
	for left := n; left > 0; left -= int64(len(unit)) {
		w.Write(unit[:min(int64(len(unit)), left)])
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// once runs argv, checks both streams and returns the time and the relaying
// process's peak RSS in KiB (0 without a relayer).
func once(argv []string, relayer, id string, outN, errN int64) (time.Duration, int64, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	var wg sync.WaitGroup
	var outErr, errErr error
	wg.Add(2)
	go func() { defer wg.Done(); outErr = testbundle.CheckRepeated(stdout, outLine, outN) }()
	go func() { defer wg.Done(); errErr = testbundle.CheckRepeated(stderr, errLine, errN) }()
	stop := make(chan struct{})
	peakc := make(chan int64, 1)
	go func() { peakc <- watchPeak(relayer, id, stop) }()
	wg.Wait()
	werr := cmd.Wait()
	d := time.Since(start)
	close(stop)
	peak := <-peakc
	if err := errors.Join(werr, outErr, errErr); err != nil {
		return 0, 0, err
	}
	return d, peak, nil
}

// watchPeak samples the VmHWM of the process whose command line holds both
// relayer and id until stop, and returns the largest seen (KiB).
func watchPeak(relayer, id string, stop <-chan struct{}) int64 {
	if relayer == "" {
		<-stop
		return 0
	}
	var peak int64
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
		cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range cmdlines {
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Contains(b, []byte(relayer)) || !bytes.Contains(b, []byte(id)) {
				continue
			}
			st, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "status"))
			for _, l := range strings.Split(string(st), "\n") {
				if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					peak = max(peak, kb)
				}
			}
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
