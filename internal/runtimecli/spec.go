package runtimecli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/lodgeruntime/lodge/internal/oci"
)

// cmdSpec writes runc's default config.json into the bundle.
func cmdSpec(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	fs := newFlagSet("spec")
	bundle := fs.String("bundle", ".", "bundle directory")
	fs.StringVar(bundle, "b", ".", "bundle directory")
	rootless := fs.Bool("rootless", false, "a spec for a rootless container")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{"spec: takes no arguments"}
	}
	s := oci.DefaultSpec()
	if *rootless {
		return errors.New("spec --rootless: Lodge runs containers as root inside their VM; rootless specs are not supported")
	}
	path := filepath.Join(*bundle, "config.json")
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("file %s exists. Remove it first", path)
	}
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o666)
}

// cmdFeatures prints the OCI features document.
func cmdFeatures(ctx context.Context, g globals, log *slog.Logger, env Env, args []string) error {
	if err := parse(newFlagSet("features"), args); err != nil {
		return err
	}
	yes, no := true, false
	f := features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions: []string{"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
			"noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private",
			"rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "rw", "shared", "slave",
			"strictatime", "suid", "sync"},
		Linux: &features.Linux{
			Namespaces: []string{"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"},
			Capabilities: []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
				"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
				"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
				"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
				"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
				"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
				"CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
				"CAP_CHECKPOINT_RESTORE"},
			Cgroup:   &features.Cgroup{V1: &no, V2: &yes, Systemd: &no, SystemdUser: &no},
			Seccomp:  &features.Seccomp{Enabled: &yes},
			Apparmor: &features.Apparmor{Enabled: &no},
			Selinux:  &features.Selinux{Enabled: &no},
		},
		Annotations: map[string]string{
			"io.github.lodgeruntime.vm":     "every container runs in its own microVM with its own kernel",
			"io.github.lodgeruntime.cgroup": "cgroup v2 inside the guest",
		},
	}
	return printJSON(env.IO.Out, f)
}
