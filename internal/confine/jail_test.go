package confine

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A device node of root's alone (mode 0600, as /dev/kvm is on hosts
// without udev's kvm group) opens for a program of another user in a jail
// that makes the node its own (OwnDevices), not through a bind of the
// host's node (Devices); the jail's /dev is read-only either way, and the
// host's node is left as it was.
func TestJailOwnDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	node := fmt.Sprintf("/dev/lodge-jail-test-%d", os.Getpid())
	// /dev/null's device number, root's alone.
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node in /dev: %v", err)
	}
	t.Cleanup(func() { os.Remove(node) })
	const uid = 65534
	for _, tc := range []struct {
		name  string
		jail  Jail
		opens bool
	}{
		{"own", Jail{OwnDevices: []string{node}, Owner: uid}, true},
		{"bind", Jail{Devices: []string{node}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.jail.Root = filepath.Join(t.TempDir(), "root")
			if err := os.Mkdir(tc.jail.Root, 0o700); err != nil {
				t.Fatal(err)
			}
			script := "echo x >" + node + " && echo opened; stat -c %u:%a " + node + "; touch /dev/new || echo refused"
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			wait, err := StartConfined(cmd, &tc.jail, nil)
			if err != nil {
				t.Fatal(err)
			}
			<-wait
			got := out.String()
			if opened := strings.Contains(got, "opened\n"); opened != tc.opens {
				t.Errorf("the program opened the node for writing: %v, want %v:\n%s", opened, tc.opens, got)
			}
			if tc.opens && !strings.Contains(got, fmt.Sprintf("%d:600\n", uid)) {
				t.Errorf("the node in the jail is not the program's own, mode 0600:\n%s", got)
			}
			if !strings.Contains(got, "refused\n") {
				t.Errorf("the program made a file in the jail's /dev:\n%s", got)
			}
			var st unix.Stat_t
			if err := unix.Stat(node, &st); err != nil || st.Uid != 0 || st.Mode&0o777 != 0o600 {
				t.Errorf("the host's node changed: uid %d mode %#o (%v)", st.Uid, st.Mode&0o777, err)
			}
			if left, _ := os.ReadDir(tc.jail.Root); len(left) != 0 {
				t.Errorf("the jail left %d entries on the host's %s", len(left), tc.jail.Root)
			}
		})
	}
}
