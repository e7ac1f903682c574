package boot

import (
	"os"
	"strings"
)

// KernelParam returns the value of key=value on the kernel command line.
func KernelParam(key string) (string, bool) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", false
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v, true
		}
	}
	return "", false
}
