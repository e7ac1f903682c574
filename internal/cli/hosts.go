package cli

// Names on a network: containers on a network made with `lodge network
// create` find each other by name, by --network-alias and by short ID, as
// on docker's user-defined networks (whose embedded DNS server answers
// them). Lodge writes them into each member's /etc/hosts, as nerdctl does:
// the file is the container's own, bound into its root from the host
// (over the VM's share), so the host rewrites it in place whenever a
// member joins or leaves, and every member sees the change at its next
// lookup (9p with cache=mmap caches no attributes).
// Containers on the default network find no one by name, as on docker's.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lodgeruntime/lodge/internal/filelock"
)

// peersMark opens the part of a member's /etc/hosts that lists the others.
const peersMark = "# other containers on network "

// hostsBody is a container's /etc/hosts without the other members.
func hostsBody(hostname, ip string, conf *netFilesConf) string {
	if conf == nil {
		conf = &netFilesConf{}
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	for _, h := range conf.ExtraHosts { // --add-host
		name, addr, _ := strings.Cut(h, ":")
		hosts += addr + "\t" + name + "\n"
	}
	if ip != "" {
		hosts += ip + "\t" + hostname + "\n"
	}
	return hosts
}

// member is a container on a network that has an address now.
type member struct {
	rec      *ctrRecord
	hostname string
	ip       string // its address on that network
}

// names are what the others call it: its name, its aliases, its short ID
// and its hostname, each once.
func (m member) names() []string {
	var out []string
	add := func(n string) {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	add(m.rec.Name)
	for _, a := range m.rec.aliases() {
		add(a)
	}
	add(m.rec.ID[:12])
	add(m.hostname)
	return out
}

// networkMembers are the containers on network name whose namespace is
// there (running or paused, or created and not yet started); oldest
// first, so that of two with one alias the older answers, as docker's.
func networkMembers(name string) []member {
	all, _ := allCtrs()
	var out []member
	for _, r := range all {
		ip := r.Network.ipOn(name)
		if ip == "" {
			continue
		}
		if _, err := os.Stat(r.Network.NetNS); err != nil {
			continue
		}
		h, _ := os.ReadFile(filepath.Join(ctrDir(r.ID), "hostname"))
		out = append(out, member{rec: r, hostname: strings.TrimSpace(string(h)), ip: ip})
	}
	slices.SortStableFunc(out, func(a, b member) int { return a.rec.Created.Compare(b.rec.Created) })
	return out
}

// memberHosts is m's /etc/hosts: for each user-defined network it is on,
// the other members (membersOf gives a network's members).
func memberHosts(m member, membersOf func(network string) []member) string {
	body := hostsBody(m.hostname, m.rec.Network.IP, m.rec.NetFiles)
	for _, n := range m.rec.Network.names() {
		if n == bridgeNetwork {
			continue
		}
		var peers strings.Builder
		for _, o := range membersOf(n) {
			if o.rec.ID != m.rec.ID {
				peers.WriteString(o.ip + "\t" + strings.Join(o.names(), " ") + "\n")
			}
		}
		if peers.Len() > 0 {
			body += peersMark + n + "\n" + peers.String()
		}
	}
	return body
}

// hostsLockPath is the lock of the members' /etc/hosts: one for all
// networks, as a container's file lists the members of each of its
// networks.
func hostsLockPath() string { return filepath.Join(runtimeState, "hosts.lock") }

// refreshHosts rewrites the /etc/hosts of every member of network name
// (a user-defined one; the default network has no names) after a
// container joined or left it. The files are written in place: each is
// bound into its container by inode.
func refreshHosts(ctx context.Context, name string) error {
	if name == "" || name == bridgeNetwork {
		return nil
	}
	if err := os.MkdirAll(runtimeState, 0o700); err != nil {
		return err
	}
	unlock, err := filelock.Lock(ctx, hostsLockPath(), true)
	if err != nil {
		return err
	}
	defer unlock()
	known := map[string][]member{}
	membersOf := func(n string) []member {
		if _, ok := known[n]; !ok {
			known[n] = networkMembers(n)
		}
		return known[n]
	}
	var errs []error
	for _, m := range membersOf(name) {
		p := filepath.Join(ctrDir(m.rec.ID), "hosts")
		want := memberHosts(m, membersOf)
		if have, err := os.ReadFile(p); err != nil || string(have) == want {
			continue // removed meanwhile, or as it should be
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil {
			_, err = f.WriteString(want)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validHostname: dot-separated labels of letters, digits, '-' and '_'
// (compose's service names have them), none empty or longer than 63.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// aliases are its --network-alias names.
func (r *ctrRecord) aliases() []string {
	if r.NetFiles == nil {
		return nil
	}
	return r.NetFiles.Aliases
}
