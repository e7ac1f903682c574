package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/lodgeruntime/lodge/internal/filelock"
	"github.com/lodgeruntime/lodge/internal/netsetup"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A container's egress rule (`--allow-out`, `--deny-out`; the sandbox
// service's allow_out and deny_out) says what it may open connections
// to: a destination in Allow may be reached, then one in Deny may not,
// and the rest may, as E2B's lists read. It holds for every address of
// the container on each of its networks, towards the host's own
// addresses (INPUT) as towards everything routed or bridged (FORWARD),
// and never for replies to connections made to it. The rules name the
// container by its source address, which netsetup's guard keeps the
// guest from forging; each container has a chain of its own, made at
// every join and removed at its leave, so that an address handed on to
// another container takes no rule with it.
type egress struct {
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
	// Proxy, if not 0, is the port on the container's gateway (the host)
	// its TCP connections to ports 80 and 443 are sent to (a proxy that
	// decides by the name they ask for: the sandbox service's), which
	// it may reach with its resolvers (DNS) whatever Deny says.
	Proxy int `json:"proxy,omitempty"`
	// Resolvers are the nameservers of its resolv.conf (with Proxy).
	Resolvers []string `json:"resolvers,omitempty"`
	// DNS, if not 0, is the port on its gateway its DNS queries (UDP and
	// TCP port 53, to any server) are sent to: a resolver that adds the
	// addresses of names it may reach to its set (egressSet), which its
	// chain lets through before Deny (the sandbox service's; netsetup.EgressSet).
	DNS int `json:"dns,omitempty"`
}

// orEmpty is eg, or a new empty rule where there is none.
func orEmpty(eg *egress) *egress {
	if eg == nil {
		return &egress{}
	}
	return eg
}

const (
	inputChain      = "LODGE-INPUT"      // filter: jumped to from INPUT, first
	preroutingChain = "LODGE-PREROUTING" // nat: jumped to from PREROUTING, first
)

// parseEgress reads --allow-out and --deny-out: IPv4 addresses or CIDRs
// (Lodge's networks are IPv4), kept in canonical form; nil when both are
// empty.
func parseEgress(allow, deny []string) (*egress, error) {
	if len(allow) == 0 && len(deny) == 0 {
		return nil, nil
	}
	eg := &egress{}
	for _, l := range []struct {
		flag string
		in   []string
		out  *[]string
	}{{"--allow-out", allow, &eg.Allow}, {"--deny-out", deny, &eg.Deny}} {
		for _, s := range l.in {
			c, err := parseCIDR(s)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %w", l.flag, s, err)
			}
			if !slices.Contains(*l.out, c) {
				*l.out = append(*l.out, c)
			}
		}
	}
	return eg, nil
}

// parseCIDR reads an IPv4 address or CIDR into canonical CIDR form.
func parseCIDR(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		s += "/32"
	}
	ip, n, err := net.ParseCIDR(s)
	switch {
	case err != nil && !strings.Contains(s, ":") && strings.IndexFunc(s, unicode.IsLetter) >= 0:
		return "", errors.New("give an IPv4 address or CIDR: a name's addresses change, and Lodge does not follow them")
	case err != nil:
		return "", errors.New("not an IPv4 address or CIDR")
	case ip.To4() == nil:
		return "", errors.New("an IPv6 destination: Lodge's networks are IPv4")
	}
	return n.String(), nil
}

// egressChain is container id's chain (iptables allows 28 characters).
func egressChain(id string) string { return "LODGE-EG-" + id[:12] }

// egressTag is the comment on container id's jumps, one word so that
// iptables-save prints it unquoted.
func egressTag(id string) string { return "lodge-container-" + id[:12] }

// egressRules are the rules of container id's chain, and its jumps (one
// per address and built-in direction) to it.
func egressRules(id string, ips []string, eg *egress) (chain, jumps []netRule) {
	ch := egressChain(id)
	chain = append(chain, netRule{"filter", ch, []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"}, false})
	if eg.Proxy > 0 {
		chain = append(chain, netRule{"filter", ch, []string{"-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL", "-m", "tcp", "--dport", strconv.Itoa(eg.Proxy), "-j", "RETURN"}, false})
		for _, r := range eg.Resolvers {
			for _, proto := range []string{"udp", "tcp"} {
				chain = append(chain, netRule{"filter", ch, []string{"-d", r + "/32", "-p", proto, "-m", proto, "--dport", "53", "-j", "RETURN"}, false})
			}
		}
	}
	if eg.DNS > 0 {
		for _, proto := range []string{"udp", "tcp"} {
			chain = append(chain, netRule{"filter", ch, []string{"-p", proto, "-m", "addrtype", "--dst-type", "LOCAL", "-m", proto, "--dport", strconv.Itoa(eg.DNS), "-j", "RETURN"}, false})
		}
	}
	for _, c := range eg.Allow {
		chain = append(chain, netRule{"filter", ch, []string{"-d", c, "-j", "RETURN"}, false})
	}
	if eg.DNS > 0 {
		chain = append(chain, netRule{"filter", ch, []string{"-m", "set", "--match-set", netsetup.EgressSet(id), "dst", "-j", "RETURN"}, false})
	}
	for _, c := range eg.Deny {
		chain = append(chain, netRule{"filter", ch, []string{"-d", c, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"}, false})
	}
	for _, ip := range ips {
		for _, from := range []string{forwardChain, inputChain} {
			jumps = append(jumps, netRule{"filter", from, []string{"-s", ip + "/32", "-m", "comment", "--comment", egressTag(id), "-j", ch}, true})
		}
		if eg.Proxy > 0 {
			jumps = append(jumps, netRule{"nat", preroutingChain, []string{"-s", ip + "/32", "-p", "tcp", "-m", "multiport", "--dports", "80,443",
				"-m", "comment", "--comment", egressTag(id), "-j", "REDIRECT", "--to-ports", strconv.Itoa(eg.Proxy)}, true})
		}
		if eg.DNS > 0 {
			for _, proto := range []string{"udp", "tcp"} {
				jumps = append(jumps, netRule{"nat", preroutingChain, []string{"-s", ip + "/32", "-p", proto, "-m", proto, "--dport", "53",
					"-m", "comment", "--comment", egressTag(id), "-j", "REDIRECT", "--to-ports", strconv.Itoa(eg.DNS)}, true})
			}
		}
	}
	return chain, jumps
}

// applyEgress installs container id's rules for its addresses ips,
// replacing any it had.
func applyEgress(ctx context.Context, id string, ips []string, eg *egress) (retErr error) {
	if err := bridgeFiltered(); err != nil {
		return err
	}
	saved, unlock, err := lockedRules(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := dropEgress(ctx, id, saved); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			if saved, err := saveRules(ctx); err == nil {
				dropEgress(context.WithoutCancel(ctx), id, saved)
			}
		}
	}()
	for _, j := range []netRule{
		{"filter", "INPUT", []string{"-m", "comment", "--comment", "lodge containers", "-j", inputChain}, true},
		{"nat", "PREROUTING", []string{"-m", "comment", "--comment", "lodge containers", "-j", preroutingChain}, true},
	} {
		to := j.spec[len(j.spec)-1]
		if !slices.Contains(saved[j.table].chains, to) {
			if err := iptables(ctx, "-w", "-t", j.table, "-N", to); err != nil {
				return err
			}
		}
		if !saved.has(j) {
			if err := iptables(ctx, j.args("-I", "1")...); err != nil {
				return err
			}
		}
	}
	if eg.DNS > 0 {
		// A new set: what an earlier rule's resolver let through is
		// not carried over to new rules.
		if err := netlink.IpsetCreate(netsetup.EgressSet(id), "hash:ip", netlink.IpsetCreateOptions{Timeout: new(uint32(0))}); err != nil {
			return fmt.Errorf("egress: the set of %s's resolved addresses: %w", id[:12], err)
		}
	}
	if err := iptables(ctx, "-w", "-t", "filter", "-N", egressChain(id)); err != nil {
		return err
	}
	chain, jumps := egressRules(id, ips, eg)
	for _, r := range chain {
		if err := iptables(ctx, r.args("-A")...); err != nil {
			return err
		}
	}
	for _, r := range jumps {
		if err := iptables(ctx, r.args("-I", "1")...); err != nil {
			return err
		}
	}
	return nil
}

// removeEgress removes container id's rules, whatever addresses they
// named (none is no error).
func removeEgress(ctx context.Context, id string) error {
	saved, unlock, err := lockedRules(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return dropEgress(ctx, id, saved)
}

// dropEgress deletes what saved shows of container id's jumps and chain.
func dropEgress(ctx context.Context, id string, saved savedRules) error {
	var errs []error
	tag := "--comment " + egressTag(id) + " "
	for _, table := range []string{"filter", "nat"} {
		for _, l := range saved[table].rules {
			if strings.Contains(l, tag) {
				f := strings.Fields(l)
				errs = append(errs, iptables(ctx, slices.Concat([]string{"-w", "-t", table, "-D"}, f[1:])...))
			}
		}
	}
	if ch := egressChain(id); slices.Contains(saved["filter"].chains, ch) {
		errs = append(errs, iptables(ctx, "-w", "-t", "filter", "-F", ch), iptables(ctx, "-w", "-t", "filter", "-X", ch))
	}
	// Its set, once no rule names it (--egress-dns; none is no error).
	if err := netlink.IpsetDestroy(netsetup.EgressSet(id)); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("egress: the set of %s's resolved addresses: %w", id[:12], err))
	}
	return errors.Join(errs...)
}

// lockedRules takes the lock on Lodge's rules and reads them as they
// are; the caller unlocks.
func lockedRules(ctx context.Context) (savedRules, func(), error) {
	unlock, err := lockRules(ctx)
	if err != nil {
		return nil, nil, err
	}
	saved, err := saveRules(ctx)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return saved, unlock, nil
}

func saveRules(ctx context.Context) (savedRules, error) {
	out, err := exec.CommandContext(ctx, "iptables-save").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save: %w (is iptables installed?)", err)
	}
	return parseSave(out), nil
}

// bridgeNF is the switch that sends bridged IPv4 through iptables.
const bridgeNF = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// bridgeFiltered makes sure that what one container sends another on
// the same bridge passes the rules too (br_netfilter, as docker loads
// it); else a peer would be out of their reach.
func bridgeFiltered() error {
	if _, err := os.Stat(bridgeNF); err != nil {
		if out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput(); err != nil {
			return fmt.Errorf("egress rules need the kernel's br_netfilter, to see what containers on one bridge send each other: modprobe br_netfilter: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	b, err := os.ReadFile(bridgeNF)
	if err != nil {
		return fmt.Errorf("egress rules: %w", err)
	}
	if strings.TrimSpace(string(b)) != "1" {
		if err := os.WriteFile(bridgeNF, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("egress rules need %s set to 1: %w", bridgeNF, err)
		}
	}
	return nil
}

// ips are the container's addresses on its networks.
func (n *ctrNetwork) ips() []string {
	var out []string
	if n.IP != "" {
		out = append(out, n.IP)
	}
	for _, l := range n.Extra {
		if l.IP != "" {
			out = append(out, l.IP)
		}
	}
	return out
}

// nonEmpty is update's list without its empty values ("" clears it).
func nonEmpty(l *[]string) []string {
	if l == nil {
		return nil
	}
	return slices.DeleteFunc(slices.Clone(*l), func(s string) bool { return s == "" })
}

// updateEgress replaces container r's allow list, deny list, proxy, DNS
// port or all (nil: kept) in its record and, while it is on its networks, in the
// host's rules. The container's network lock keeps its leave out
// meanwhile: rules installed after it would outlive its addresses.
func updateEgress(ctx context.Context, r *ctrRecord, allow, deny *[]string, proxy, dns *int) error {
	if r.Network == nil {
		return fmt.Errorf("container %s has no network: it has no egress rules to change", r.Name)
	}
	unlock, err := filelock.Lock(ctx, filepath.Join(ctrDir(r.ID), "network.lock"), true)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := loadCtr(r.ID)
	if err != nil {
		return err
	}
	n := cur.Network
	want := egress{} // what it had, with what the flags change
	if n.Egress != nil {
		want = *n.Egress
	}
	if allow != nil {
		want.Allow = nonEmpty(allow)
	}
	if deny != nil {
		want.Deny = nonEmpty(deny)
	}
	if proxy != nil {
		want.Proxy = *proxy
	}
	if dns != nil {
		want.DNS = *dns
	}
	eg, err := parseEgress(want.Allow, want.Deny)
	if err != nil {
		return err
	}
	if want.DNS > 0 {
		eg = orEmpty(eg)
		eg.DNS = want.DNS
	}
	if want.Proxy > 0 {
		eg = orEmpty(eg)
		eg.Proxy = want.Proxy
		if b, err := os.ReadFile(filepath.Join(ctrDir(r.ID), "resolv.conf")); err == nil {
			eg.Resolvers = nameservers(string(b))
		}
	}
	if _, err := os.Stat(n.NetNS); err == nil && len(n.ips()) > 0 { // on its networks now
		if eg == nil {
			err = removeEgress(ctx, r.ID)
		} else {
			err = applyEgress(ctx, r.ID, n.ips(), eg)
		}
		if err != nil && n.Egress != nil {
			// A failed apply leaves none: put back the rules it had
			// rather than leave it unbound.
			if rerr := applyEgress(context.WithoutCancel(ctx), r.ID, n.ips(), n.Egress); rerr != nil {
				return fmt.Errorf("container %s: %w; and its former rules could not be put back (%v): it runs without egress rules, stop it (lodge stop %s)", r.Name, err, rerr, r.Name)
			}
		}
		if err != nil {
			return fmt.Errorf("container %s: %w (its rules are as they were)", r.Name, err)
		}
	}
	_, err = updateCtr(ctx, r.ID, func(c *ctrRecord) {
		if c.Network != nil {
			c.Network.Egress = eg
		}
	})
	return err
}

// nameservers are the resolvers a resolv.conf names.
func nameservers(resolv string) []string {
	var out []string
	for _, l := range strings.Split(resolv, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nameserver" && net.ParseIP(f[1]).To4() != nil {
			out = append(out, f[1])
		}
	}
	return out
}

// egress is inspect's HostConfig.Egress (Lodge's own): the container's
// rules, or null.
func (r *ctrRecord) egress() *egress {
	if r.Network == nil {
		return nil
	}
	return r.Network.Egress
}
