package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lodgeruntime/lodge/internal/oci"
)

func TestCapabilities(t *testing.T) {
	t.Parallel()
	base := []string{"CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"}
	for _, tc := range []struct {
		name      string
		add, drop []string
		want      []string
		err       string
	}{
		{name: "none", want: base},
		{name: "drop one, any spelling", drop: []string{"net_raw"}, want: []string{"CAP_CHOWN", "CAP_KILL"}},
		{name: "drop ALL, add one", drop: []string{"ALL"}, add: []string{"NET_BIND_SERVICE"}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "add ALL, drop one", add: []string{"all"}, drop: []string{"CAP_SYS_ADMIN"},
			want: slices.DeleteFunc(slices.Clone(oci.AllCaps), func(c string) bool { return c == "CAP_SYS_ADMIN" })},
		{name: "add one twice", add: []string{"CAP_KILL", "SYS_PTRACE"}, want: append(slices.Clone(base), "CAP_SYS_PTRACE")},
		{name: "unknown", add: []string{"FLY"}, err: `--cap-add: unknown capability "FLY"`},
	} {
		got, err := capabilities(base, tc.add, tc.drop)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v %v, want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestParseUlimit(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][3]any{
		"nofile=1024":      {"RLIMIT_NOFILE", uint64(1024), uint64(1024)},
		"nproc=64:128":     {"RLIMIT_NPROC", uint64(64), uint64(128)},
		"core=-1":          {"RLIMIT_CORE", ^uint64(0), ^uint64(0)},
		"memlock=0:-1":     {"RLIMIT_MEMLOCK", uint64(0), ^uint64(0)},
		"stack=8192:65536": {"RLIMIT_STACK", uint64(8192), uint64(65536)},
	} {
		rl, err := parseUlimit(in)
		if err != nil || rl.Type != want[0] || rl.Soft != want[1] || rl.Hard != want[2] {
			t.Errorf("parseUlimit(%q) = %+v, %v; want %v", in, rl, err, want)
		}
	}
	for _, bad := range []string{"nofile", "files=1", "nofile=x", "nofile=10:5"} {
		if _, err := parseUlimit(bad); err == nil {
			t.Errorf("parseUlimit(%q): no error", bad)
		}
	}
}

func TestApplySpecOpts(t *testing.T) {
	t.Parallel()
	spec := oci.DefaultSpec()
	o := specOpts{privileged: true, pidsLimit: 50, shmSize: "128m", tmpfs: []string{"/scratch", "/run/x:size=1m,mode=700"},
		sysctls: []string{"net.ipv4.ip_forward=1"}, ulimits: []string{"nofile=100:200"}}
	if err := applySpecOpts(spec, o); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(spec.Process.Capabilities.Bounding, oci.AllCaps) || spec.Linux.MaskedPaths != nil || spec.Linux.ReadonlyPaths != nil {
		t.Errorf("--privileged: caps %v, masked %v, read-only %v", spec.Process.Capabilities.Bounding, spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths)
	}
	mounts := map[string][]string{}
	for _, m := range spec.Mounts {
		mounts[m.Destination] = m.Options
	}
	if slices.Contains(mounts["/sys"], "ro") {
		t.Errorf("--privileged: /sys still read-only: %v", mounts["/sys"])
	}
	if !slices.Contains(mounts["/dev/shm"], "size=131072k") || slices.Contains(mounts["/dev/shm"], "size=65536k") {
		t.Errorf("--shm-size 128m: %v", mounts["/dev/shm"])
	}
	if !slices.Equal(mounts["/scratch"], []string{"rw", "noexec", "nosuid", "size=65536k"}) || !slices.Equal(mounts["/run/x"], []string{"size=1m", "mode=700"}) {
		t.Errorf("--tmpfs: %v %v", mounts["/scratch"], mounts["/run/x"])
	}
	if l := spec.Linux.Resources.Pids; l == nil || l.Limit == nil || *l.Limit != 50 {
		t.Errorf("--pids-limit 50: %+v", l)
	}
	if spec.Linux.Sysctl["net.ipv4.ip_forward"] != "1" {
		t.Errorf("--sysctl: %v", spec.Linux.Sysctl)
	}
	if rl := spec.Process.Rlimits; len(rl) != 1 || rl[0].Soft != 100 || rl[0].Hard != 200 {
		t.Errorf("--ulimit nofile=100:200 replacing the default: %+v", rl)
	}
	for _, bad := range []specOpts{{sysctls: []string{"kernel.panic=1"}}, {sysctls: []string{"net.x"}}, {tmpfs: []string{"rel"}},
		{shmSize: "lots"}, {pidsLimit: -2}, {capDrop: []string{"NOPE"}}} {
		if err := applySpecOpts(oci.DefaultSpec(), bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestNetworkFilesConf(t *testing.T) {
	t.Parallel()
	o := specOpts{addHosts: []string{"db:10.0.0.5"}, dns: []string{"192.0.2.53"}, dnsSearch: []string{"corp.example"}, dnsOpts: []string{"ndots:2"}}
	conf, err := o.netFiles()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := networkFiles(dir, "web", "10.87.0.9", conf)
	if err != nil {
		t.Fatal(err)
	}
	hosts, _ := os.ReadFile(files["/etc/hosts"])
	if !strings.Contains(string(hosts), "10.0.0.5\tdb\n") || !strings.Contains(string(hosts), "10.87.0.9\tweb\n") {
		t.Errorf("/etc/hosts:\n%s", hosts)
	}
	resolv, _ := os.ReadFile(filepath.Join(dir, "resolv.conf"))
	r := string(resolv)
	if strings.Count(r, "nameserver") != 1 || !strings.Contains(r, "nameserver 192.0.2.53\n") ||
		!strings.Contains(r, "search corp.example\n") || !strings.Contains(r, "options ndots:2\n") {
		t.Errorf("/etc/resolv.conf with --dns, --dns-search, --dns-option:\n%s", r)
	}
	for _, bad := range []specOpts{{addHosts: []string{"db"}}, {addHosts: []string{"db:notip"}}, {dns: []string{"dns.example"}}} {
		if _, err := bad.netFiles(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestParseStorageOpts(t *testing.T) {
	t.Parallel()
	if n, opts, err := parseStorageOpts([]string{"size=20g"}); err != nil || n != 20<<30 || opts["size"] != "20g" {
		t.Errorf("size=20g: %d %v %v", n, opts, err)
	}
	if n, opts, err := parseStorageOpts(nil); err != nil || n != 0 || opts != nil {
		t.Errorf("none: %d %v %v", n, opts, err)
	}
	for _, bad := range []string{"size=1m", "size=17t", "size=lots", "size=-5g", "size=99999999999t", "dm.basesize=20g", "size"} {
		if _, _, err := parseStorageOpts([]string{bad}); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
