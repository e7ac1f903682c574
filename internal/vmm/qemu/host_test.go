package qemu

import "testing"

func TestParseTSCLog(t *testing.T) {
	t.Parallel()
	cases := []struct {
		log  string
		want uint64
		ok   bool
	}{
		{"[    0.000059] tsc: Detected 2596.144 MHz processor\n", 2596144, true},
		{"[0.0] tsc: Detected 2096.015 MHz processor\n[1.2] tsc: Refined TSC clocksource calibration: 2095.998 MHz\n", 2095998, true},
		{"[0.0] nothing here\n", 0, false},
	}
	for _, c := range cases {
		got, ok := ParseTSCLog([]byte(c.log))
		if got != c.want || ok != c.ok {
			t.Errorf("ParseTSCLog(%q) = %d, %v; want %d, %v", c.log, got, ok, c.want, c.ok)
		}
	}
}

// TestMeasureTSC checks the measured frequency against the kernel's own
// figure when the kernel log has one.
func TestMeasureTSC(t *testing.T) {
	want, ok := tscFromKernelLog()
	if !ok {
		t.Skip("kernel log has no TSC frequency to compare with")
	}
	got, err := measureTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	if diff := float64(got)/float64(want) - 1; diff > 0.05 || diff < -0.05 {
		t.Fatalf("measured %d kHz, kernel says %d kHz", got, want)
	}
}
