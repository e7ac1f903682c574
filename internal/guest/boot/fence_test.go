package boot

import "testing"

// The reserve stays between 32 and 64 MiB, so that a VM sized 128 MiB
// above its container's limit (about 60 MiB of it in use at boot) keeps
// that limit below the fence.
func TestFenceReserve(t *testing.T) {
	for _, tc := range []struct{ total, want uint64 }{
		{200 << 20, 32 << 20},
		{400 << 20, 50 << 20},
		{4 << 30, 64 << 20},
	} {
		if got := fenceReserve(tc.total); got != tc.want {
			t.Errorf("fenceReserve(%d MiB) = %d MiB, want %d", tc.total>>20, got>>20, tc.want>>20)
		}
	}
	for _, l := range []uint64{64 << 20, 1 << 30, 8 << 30} {
		total := l + 128<<20
		if avail := total - 60<<20; avail-fenceReserve(total) < l {
			t.Errorf("a %d MiB limit does not fit below the fence of its VM", l>>20)
		}
	}
}
