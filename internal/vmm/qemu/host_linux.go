package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// ErrKVMUnusable reports a host where QEMU cannot use KVM.
var ErrKVMUnusable = errors.New("kvm unusable")

// CheckKVM reports whether /dev/kvm can create a VM. It does not prove that
// a guest boots: some nested hosts create VMs that never run (see
// config.AccelVerdict for the boot probe that catches those).
func CheckKVM() error {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open /dev/kvm: %w", ErrKVMUnusable, err)
	}
	defer unix.Close(fd)
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("%w: KVM_GET_API_VERSION: %w", ErrKVMUnusable, errno)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%w: KVM API version %d, want %d", ErrKVMUnusable, v, kvmAPIVersion)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("%w: KVM_CREATE_VM: %w", ErrKVMUnusable, errno)
	}
	unix.Close(int(vm))
	return nil
}

var tscLogLine = regexp.MustCompile(`tsc: (?:Refined TSC clocksource calibration: |Detected )([0-9]+)\.([0-9]{3}) MHz`)

// HostTSCkHz returns the host's TSC frequency in kHz: from sysfs where the
// kernel exports it, else from the kernel log, else by measuring it.
func HostTSCkHz() (uint64, error) {
	if b, err := os.ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 {
			return v, nil
		}
	}
	if v, ok := tscFromKernelLog(); ok {
		return v, nil
	}
	return measureTSCkHz()
}

func tscFromKernelLog() (uint64, bool) {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil || n <= 0 {
		return 0, false
	}
	buf := make([]byte, n)
	n, err = unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return 0, false
	}
	return ParseTSCLog(buf[:n])
}

// ParseTSCLog finds the TSC frequency in kernel log text, preferring the
// refined calibration over the first detection.
func ParseTSCLog(log []byte) (uint64, bool) {
	var best uint64
	for _, m := range tscLogLine.FindAllSubmatch(log, -1) {
		mhz, err1 := strconv.ParseUint(string(m[1]), 10, 64)
		frac, err2 := strconv.ParseUint(string(m[2]), 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		best = mhz*1000 + frac
		if bytes.Contains(m[0], []byte("Refined")) {
			return best, true
		}
	}
	return best, best > 0
}

// measureTSCkHz counts TSC ticks against CLOCK_MONOTONIC and returns the
// median of a few short windows.
func measureTSCkHz() (uint64, error) {
	var runs []uint64
	for range 5 {
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(10 * time.Millisecond)
		t1, c1 := time.Now(), rdtsc()
		ns := t1.Sub(t0).Nanoseconds()
		if ns <= 0 || c1 <= c0 {
			continue
		}
		runs = append(runs, (c1-c0)*1e6/uint64(ns))
	}
	if len(runs) == 0 {
		return 0, errors.New("cannot measure the host TSC frequency")
	}
	slices.Sort(runs)
	return runs[len(runs)/2], nil
}

// rdtsc is implemented in tsc_amd64.s.
func rdtsc() uint64
