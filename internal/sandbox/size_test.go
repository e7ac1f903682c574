package sandbox

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/lodgeruntime/lodge/internal/vmm"
)

func TestSizeVM(t *testing.T) {
	t.Parallel()
	base := vmm.Config{VCPUs: 1, MemoryMiB: 256}
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	cases := []struct {
		name      string
		res       []*specs.LinuxResources
		mem, cpus int
	}{
		{"no limits", []*specs.LinuxResources{nil, {}}, 256, 1},
		{"memory limit", []*specs.LinuxResources{{Memory: &specs.LinuxMemory{Limit: i64(512 << 20)}}}, 512 + VMOverheadMiB, 1},
		{"pod sums", []*specs.LinuxResources{
			{Memory: &specs.LinuxMemory{Limit: i64(100 << 20)}, CPU: &specs.LinuxCPU{Quota: i64(50000), Period: u64(100000)}},
			{Memory: &specs.LinuxMemory{Limit: i64(50<<20 + 1)}, CPU: &specs.LinuxCPU{Quota: i64(100000), Period: u64(100000)}},
		}, 151 + VMOverheadMiB, min(2, runtime.NumCPU())},
		{"cpuset", []*specs.LinuxResources{{CPU: &specs.LinuxCPU{Cpus: "0,1"}}}, 256, min(2, runtime.NumCPU())},
		{"huge quota capped", []*specs.LinuxResources{{CPU: &specs.LinuxCPU{Quota: i64(1 << 30), Period: u64(1000)}}}, 256, runtime.NumCPU()},
	}
	for _, c := range cases {
		got := SizeVM(base, c.res...)
		if got.MemoryMiB != c.mem || got.VCPUs != c.cpus {
			t.Errorf("%s: %d MiB, %d vCPUs; want %d, %d", c.name, got.MemoryMiB, got.VCPUs, c.mem, c.cpus)
		}
	}
}

// A VM starts only if the host's available memory less the reserve covers
// it, and the refusal says what to do.
func TestAdmitMemory(t *testing.T) {
	defer func(f func() (int, error)) { memAvailableMiB = f }(memAvailableMiB)
	memAvailableMiB = func() (int, error) { return 1000, nil }
	for _, tc := range []struct {
		vm, reserve int
		ok          bool
	}{
		{256, 256, true}, {744, 256, true}, {745, 256, false}, {1000, 0, true}, {256, 1000, false},
	} {
		cfg := Config{VM: vmm.Config{MemoryMiB: tc.vm}, HostReserveMiB: tc.reserve}
		err := admitMemory(cfg)
		if (err == nil) != tc.ok {
			t.Errorf("VM %d MiB, reserve %d MiB, 1000 available: %v, want admitted %v", tc.vm, tc.reserve, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, ErrHostMemory) || !strings.Contains(err.Error(), "1000 MiB available")) {
			t.Errorf("refusal %q", err)
		}
	}
	memAvailableMiB = func() (int, error) { return 0, errors.New("no /proc") }
	if err := admitMemory(Config{VM: vmm.Config{MemoryMiB: 256}}); err != nil {
		t.Errorf("a host whose memory cannot be read: %v", err)
	}
}

func TestMemAvailable(t *testing.T) {
	t.Parallel()
	if avail, err := memAvailableMiB(); err != nil || avail <= 0 {
		t.Fatalf("MemAvailable %d MiB, %v", avail, err)
	}
}
