package oci

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// Features is the OCI features document of Lodge's runtimes (runc's
// `features`; containerd reads it through the shim's -info).
func Features() features.Features {
	yes, no := true, false
	return features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: specs.Version,
		Hooks:         []string{"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"},
		MountOptions: []string{"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
			"noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private",
			"rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "rw", "shared", "slave",
			"strictatime", "suid", "sync",
			// recursive mount attributes (mount_setattr in the guest kernel)
			"rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec", "rexec", "rnoatime", "ratime",
			"rnodiratime", "rdiratime", "rrelatime", "rnorelatime", "rstrictatime", "rnostrictatime"},
		Linux: &features.Linux{
			Namespaces:   []string{"cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"},
			Capabilities: AllCaps,
			Cgroup:       &features.Cgroup{V1: &no, V2: &yes, Systemd: &no, SystemdUser: &no},
			Seccomp:      &features.Seccomp{Enabled: &yes},
			Apparmor:     &features.Apparmor{Enabled: &no},
			Selinux:      &features.Selinux{Enabled: &no},
		},
		Annotations: map[string]string{
			"io.github.lodgeruntime.vm":     "every container runs in its own microVM with its own kernel",
			"io.github.lodgeruntime.cgroup": "cgroup v2 inside the guest",
		},
	}
}

// AllCaps are the capabilities the guest kernel knows (Linux 6.1).
var AllCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
	"CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
	"CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
	"CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE"}
