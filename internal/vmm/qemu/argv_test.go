package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lodgeruntime/lodge/internal/vmm"
)

var update = flag.Bool("update", false, "rewrite golden files")

func baseConfig() vmm.Config {
	return vmm.Config{
		ID:        "sb1",
		StateDir:  "/run/lodge/sb1",
		Kernel:    "/var/lib/lodge/guest/vmlinux",
		Initrd:    "/var/lib/lodge/guest/initrd.img",
		VCPUs:     1,
		MemoryMiB: 256,
		Accel:     vmm.AccelTCG,
		Channel:   vmm.ChannelSerial,
		Shares9P:  []vmm.Share9P{{Tag: "lodge-shared", Path: "/run/lodge/sb1/share"}},
	}
}

func TestArgvGolden(t *testing.T) {
	t.Parallel()
	host := Host{TSCkHz: 2096015}
	cases := map[string]func(*vmm.Config){
		"tcg-serial": func(*vmm.Config) {},
		"kvm-serial": func(c *vmm.Config) { c.Accel = vmm.AccelKVM },
		"kvm-vsock-2cpu": func(c *vmm.Config) {
			c.Accel, c.Channel, c.VsockCID, c.VCPUs = vmm.AccelKVM, vmm.ChannelVsock, 42, 2
		},
		"tcg-serial-2nic": func(c *vmm.Config) {
			c.NICs = []vmm.NIC{{Tap: os.Stdin, MAC: "0A:58:0a:58:00:05"}, {Tap: os.Stdin, MAC: "02:42:ac:11:00:02"}}
		},
		"kvm-vsock-nic": func(c *vmm.Config) {
			c.Accel, c.Channel, c.VsockCID = vmm.AccelKVM, vmm.ChannelVsock, 42
			c.NICs = []vmm.NIC{{Tap: os.Stdin, MAC: "0a:58:0a:58:00:05"}}
		},
		"tcg-template": func(c *vmm.Config) {
			c.Shares9P = []vmm.Share9P{{Tag: "lodge-shared", Path: "/run/lodge/templates/t1/empty"}}
			c.Memory = vmm.Memory{File: "/run/lodge/templates/t1/memory", Shared: true}
		},
		"tcg-clone": func(c *vmm.Config) {
			c.Shares9P = []vmm.Share9P{{Tag: "lodge-shared", Dir: os.Stdin}}
			c.Memory = vmm.Memory{File: "/run/lodge/templates/t1/memory"}
			c.Incoming = true
		},
		"tcg-clone-mergeable": func(c *vmm.Config) {
			c.Shares9P = []vmm.Share9P{{Tag: "lodge-shared", Dir: os.Stdin}}
			c.Memory = vmm.Memory{File: "/run/lodge/templates/t1/memory", Mergeable: true}
			c.Incoming = true
		},
		"tcg-cold-9p": func(c *vmm.Config) { // a cold boot's share, a directory as a clone's
			c.Shares9P = []vmm.Share9P{{Tag: "lodge-shared", Dir: os.Stdin}}
		},
		"tcg-noshare-extra-args": func(c *vmm.Config) {
			c.Shares9P = nil
			c.KernelArgs = []string{"lodge.debug=1"}
		},
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			mod(&cfg)
			argv, err := Argv(cfg, host)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(argv, "\n") + "\n"
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("argv differs from %s (-want +got); rerun with -update if intended:\n%s", golden, diff)
			}
		})
	}
}

func TestArgvRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		mod  func(*vmm.Config)
		host Host
	}{
		"tcg without tsc":             {func(*vmm.Config) {}, Host{}},
		"no kernel":                   {func(c *vmm.Config) { c.Kernel = "" }, Host{TSCkHz: 1}},
		"tiny memory":                 {func(c *vmm.Config) { c.MemoryMiB = 16 }, Host{TSCkHz: 1}},
		"bad NIC MAC":                 {func(c *vmm.Config) { c.NICs = []vmm.NIC{{Tap: os.Stdin, MAC: "zz"}} }, Host{TSCkHz: 1}},
		"bad accel":                   {func(c *vmm.Config) { c.Accel = "hvf" }, Host{TSCkHz: 1}},
		"reserved cid":                {func(c *vmm.Config) { c.Channel, c.VsockCID = vmm.ChannelVsock, 2 }, Host{TSCkHz: 1}},
		"space in arg":                {func(c *vmm.Config) { c.KernelArgs = []string{"a b"} }, Host{TSCkHz: 1}},
		"bad share tag":               {func(c *vmm.Config) { c.Shares9P[0].Tag = "a/b" }, Host{TSCkHz: 1}},
		"zero vcpus":                  {func(c *vmm.Config) { c.VCPUs = 0 }, Host{TSCkHz: 1}},
		"unknown transport":           {func(c *vmm.Config) { c.Channel = "tcp" }, Host{TSCkHz: 1}},
		"restore without memory file": {func(c *vmm.Config) { c.Incoming = true }, Host{TSCkHz: 1}},
		"comma in memory file":        {func(c *vmm.Config) { c.Memory.File = "/tmp/a,share=on" }, Host{TSCkHz: 1}},
		"comma in id":                 {func(c *vmm.Config) { c.ID = "a,process=evil" }, Host{TSCkHz: 1}},
		"space in id":                 {func(c *vmm.Config) { c.ID = "a -object x" }, Host{TSCkHz: 1}},
		"comma in state dir":          {func(c *vmm.Config) { c.StateDir = "/run/a,b" }, Host{TSCkHz: 1}},
		"comma in 9p path": {func(c *vmm.Config) {
			c.Shares9P = []vmm.Share9P{{Tag: "t", Path: "/a,security_model=passthrough"}}
		}, Host{TSCkHz: 1}},
		"9p without path or dir": {func(c *vmm.Config) { c.Shares9P = []vmm.Share9P{{Tag: "t"}} }, Host{TSCkHz: 1}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			tc.mod(&cfg)
			if argv, err := Argv(cfg, tc.host); err == nil {
				t.Fatalf("Argv accepted a bad config: %q", argv)
			}
		})
	}
}

// Every argument the command line gives a guest but the host's TSC rate,
// its machine, its CPU model and every device it gets whatever its config, are in
// GuestFact, which keys templates: a guest argument, CPU or device changed
// in this driver makes new templates rather than clones of guests booted
// with the old ones.
func TestGuestFactCoversTheGuest(t *testing.T) {
	for _, accel := range []vmm.Accel{vmm.AccelKVM, vmm.AccelTCG} {
		cfg := baseConfig()
		cfg.Accel = accel
		cfg.Shares9P = nil // no configured device but the agent channel's
		argv, err := Argv(cfg, Host{TSCkHz: 2500000})
		if err != nil {
			t.Fatal(err)
		}
		fact := GuestFact(accel)
		m, cpu, cmdline := argAfter(argv, "-M"), argAfter(argv, "-cpu"), argAfter(argv, "-append")
		// mem-merge is the host's (whether QEMU offers guest RAM to KSM):
		// the guest does not see it, and a clone may differ from its
		// template in it.
		m, _, _ = strings.Cut(m, ",mem-merge=")
		if !strings.HasPrefix(fact, "driver_guest=machine="+m+" cpu="+cpu+" devices=") {
			t.Errorf("%s: the guest's -M %q and -cpu %q are not in the template fact %q", accel, m, cpu, fact)
		}
		for i, a := range argv {
			if a != "-device" || i+1 == len(argv) {
				continue
			}
			d := argv[i+1]
			if strings.HasPrefix(d, "virtio-serial-device,") || strings.HasPrefix(d, "virtserialport,") {
				continue // the agent channel: a fact of the layout
			}
			_, devices, _ := strings.Cut(fact, " devices=")
			devices, _, _ = strings.Cut(devices, " args=")
			if !slices.Contains(strings.Split(devices, ";"), d) {
				t.Errorf("%s: every guest gets -device %s, which is not in the template fact %q", accel, d, fact)
			}
		}
		for _, a := range strings.Fields(cmdline) {
			if strings.HasPrefix(a, "tsc_early_khz=") || strings.HasPrefix(a, "lodge.channel=") {
				continue // the host's boot; the channel, a fact of the layout
			}
			if !strings.Contains(" "+fact[strings.Index(fact, " args=")+6:]+" ", " "+a+" ") {
				t.Errorf("%s: %q is on the command line but not in the template fact %q", accel, a, fact)
			}
		}
	}
	if GuestFact(vmm.AccelKVM) == GuestFact(vmm.AccelTCG) {
		t.Error("KVM and TCG guests get the same fact, but not the same arguments")
	}
}

// argAfter is the argument that follows flag in argv ("" if none).
func argAfter(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}
