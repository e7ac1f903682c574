package template

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testStore(t *testing.T) *Store {
	t.Helper()
	return &Store{Dir: filepath.Join(t.TempDir(), "templates"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func testInputs(t *testing.T) Inputs {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for _, n := range []string{"vmlinux", "initrd.img", "qemu"} {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	return Inputs{Files: files, Facts: []string{"accel=tcg", "tsc_khz=2096015"}}
}

// fakeBuild writes what a template VM would leave: RAM of the shape's size
// and a migration stream.
func fakeBuild(shape Shape, builds *atomic.Int32) BuildFunc {
	return func(ctx context.Context, dir string) error {
		builds.Add(1)
		time.Sleep(50 * time.Millisecond) // others arrive meanwhile
		if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("QEVM\x00\x00\x00\x03device state"), 0o600); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(dir, MemoryFile))
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Truncate(int64(shape.MemoryMiB) << 20)
	}
}

func TestRound(t *testing.T) {
	t.Parallel()
	c := Classes{VCPUs: []int{4, 1, 2}, MemoryMiB: []int{512, 256, 1024}}
	for _, tc := range []struct {
		vcpus, mem int
		want       Shape
		ok         bool
	}{
		{1, 256, Shape{1, 256}, true},
		{1, 100, Shape{1, 256}, true},
		{2, 257, Shape{2, 512}, true},
		{3, 1024, Shape{4, 1024}, true},
		{5, 256, Shape{}, false},
		{1, 1025, Shape{}, false},
	} {
		got, ok := c.Round(tc.vcpus, tc.mem)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("Round(%d, %d) = %v, %v; want %v, %v", tc.vcpus, tc.mem, got, ok, tc.want, tc.ok)
		}
	}
}

// A template is keyed by everything that shapes the guest: a change of
// shape, a fact, or any input file (rebuilt: new inode, size or mtime)
// makes another key.
func TestKeyFollowsInputs(t *testing.T) {
	t.Parallel()
	in := testInputs(t)
	shape := Shape{1, 256}
	base, err := Key(shape, in)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := Key(shape, in); again != base {
		t.Fatalf("key not stable: %s, %s", base, again)
	}
	other := func(name string, k string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if k == base {
			t.Errorf("%s: key unchanged", name)
		}
	}
	k, err := Key(Shape{2, 256}, in)
	other("vcpus", k, err)
	k, err = Key(Shape{1, 512}, in)
	other("memory", k, err)
	k, err = Key(shape, Inputs{Files: in.Files, Facts: []string{"accel=kvm", "tsc_khz=2096015"}})
	other("accelerator", k, err)
	// A rebuilt initrd: written anew and renamed into place.
	tmp := in.Files[1] + ".new"
	os.WriteFile(tmp, []byte("initrd.img"), 0o644)
	os.Rename(tmp, in.Files[1])
	k, err = Key(shape, in)
	other("initrd rebuilt", k, err)
	if _, err := Key(shape, Inputs{Files: []string{"/no/such/kernel"}}); err == nil {
		t.Error("a missing input gave a key")
	}
}

// Concurrent first starts of one shape build its template once; the
// others wait and get the same one.
func TestGetBuildsOnce(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	in := testInputs(t)
	shape := Shape{1, 256}
	var builds atomic.Int32
	var wg sync.WaitGroup
	dirs := make([]string, 8)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds))
			if err != nil {
				t.Error(err)
				return
			}
			dirs[i] = tp.Dir
		}()
	}
	wg.Wait()
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	for _, d := range dirs[1:] {
		if d != dirs[0] {
			t.Fatalf("different templates: %s, %s", d, dirs[0])
		}
	}
	st, err := os.Stat(filepath.Join(dirs[0], MemoryFile))
	if err != nil || st.Mode().Perm() != 0o400 {
		t.Fatalf("memory file: %v, mode %v; want read-only", err, st.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir, "*.tmp-*")); len(left) != 0 {
		t.Fatalf("build left %v", left)
	}
}

// A failed build leaves nothing; the next Get builds again.
func TestFailedBuildLeavesNothing(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	in := testInputs(t)
	shape := Shape{1, 256}
	_, err := s.Get(context.Background(), shape, in, func(ctx context.Context, dir string) error {
		os.WriteFile(filepath.Join(dir, MemoryFile), []byte("half"), 0o600)
		return errors.New("no space left on device")
	})
	if err == nil {
		t.Fatal("a failed build gave a template")
	}
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		t.Errorf("failed build left %s", e.Name())
	}
	// A lock file of a builder that died goes with the next build.
	os.WriteFile(filepath.Join(s.Dir, "1cpu-256M-dead.lock"), nil, 0o600)
	var builds atomic.Int32
	if _, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds)); err != nil || builds.Load() != 1 {
		t.Fatalf("next Get: %v, %d builds", err, builds.Load())
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "1cpu-256M-dead.lock")); !os.IsNotExist(err) {
		t.Errorf("an orphan lock file stayed: %v", err)
	}
}

// A build whose VM did not leave a full template (e.g. a short memory
// file) fails, and a damaged template on disk is rebuilt.
func TestDamagedTemplateIsRebuilt(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	in := testInputs(t)
	shape := Shape{1, 256}
	var builds atomic.Int32
	tp, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds))
	if err != nil {
		t.Fatal(err)
	}
	for name, damage := range map[string]func() error{
		"truncated memory":  func() error { return os.Truncate(tp.Memory(), 4096) },
		"missing state":     func() error { return os.Remove(tp.State()) },
		"state not QEMU's":  func() error { return os.WriteFile(tp.State(), []byte("garbage!"), 0o600) },
		"meta of other key": func() error { return os.WriteFile(filepath.Join(tp.Dir, MetaFile), []byte(`{"key":"x"}`), 0o600) },
	} {
		if err := damage(); err != nil {
			t.Fatal(name, err)
		}
		before := builds.Load()
		tp2, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if builds.Load() != before+1 {
			t.Errorf("%s: not rebuilt", name)
		}
		tp = tp2
	}
	// The template on disk is valid again: damage it, so that Get builds,
	// with a build that leaves a short memory file.
	os.Truncate(tp.Memory(), 1)
	_, err = s.Get(context.Background(), shape, in, func(ctx context.Context, dir string) error {
		os.WriteFile(filepath.Join(dir, StateFile), []byte("QEVM"), 0o600)
		return os.WriteFile(filepath.Join(dir, MemoryFile), []byte("short"), 0o600)
	})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("short memory from a build: %v, want ErrInvalid", err)
	}
}

// `lodge template rm` of a template in use refuses with the count of
// clones; stale templates go when unused.
func TestRemoveRefusesInUseAndPrunesStale(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	in := testInputs(t)
	shape := Shape{1, 256}
	var builds atomic.Int32
	tp, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds))
	if err != nil {
		t.Fatal(err)
	}
	// A "clone": a process holding the memory file open.
	clone := exec.Command("sleep", "60")
	f, err := os.Open(tp.Memory())
	if err != nil {
		t.Fatal(err)
	}
	clone.ExtraFiles = []*os.File{f}
	if err := clone.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { clone.Process.Kill(); clone.Wait() })
	if err := s.Remove(context.Background(), tp.Meta.Key); !errors.Is(err, ErrInUse) {
		t.Fatalf("remove in use: %v, want ErrInUse", err)
	}
	infos, _ := s.List()
	if len(infos) != 1 || infos[0].Clones != 1 || infos[0].Stale || infos[0].DiskBytes < 0 {
		t.Fatalf("list: %+v", infos)
	}
	// The kernel changes: the old template is stale, kept while used.
	os.WriteFile(in.Files[0]+".new", []byte("vmlinux 2"), 0o644)
	os.Rename(in.Files[0]+".new", in.Files[0])
	tp2, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tp.Dir); err != nil {
		t.Fatal("stale template in use was removed")
	}
	clone.Process.Kill()
	clone.Wait()
	in.Facts = append(in.Facts, "another shape of input")
	if _, err := s.Get(context.Background(), shape, in, fakeBuild(shape, &builds)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tp.Dir); !os.IsNotExist(err) {
		t.Fatal("unused stale template kept")
	}
	if err := s.Remove(context.Background(), filepath.Base(tp2.Dir)); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(context.Background(), "../etc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove ../etc: %v", err)
	}
	// A name that is no template (a mistyped flag) is refused and leaves
	// nothing in the store, not even a lock file.
	if err := s.Remove(context.Background(), "--all"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove --all: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir, "--all*")); len(left) != 0 {
		t.Errorf("removing a name that is no template left %v", left)
	}
}
