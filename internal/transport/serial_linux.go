package transport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// AgentPortName is the name of the virtio-serial port that carries the agent
// channel (QEMU: -device virtserialport,name=AgentPortName).
const AgentPortName = "lodge.agent"

// OpenSerialPort opens the guest side of the virtio-serial port called name,
// found through /sys/class/virtio-ports/*/name.
func OpenSerialPort(name string) (*os.File, error) {
	names, err := filepath.Glob("/sys/class/virtio-ports/*/name")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(n))
		return os.OpenFile(dev, os.O_RDWR, 0)
	}
	return nil, fmt.Errorf("no virtio-serial port named %q (is virtio_console loaded?)", name)
}
