package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lodgeruntime/lodge/internal/filelock"
)

// A network's NAT (masquerade of what leaves the host from its subnet) and
// forwarding (its containers' traffic and the replies to it, accepted
// ahead of the host's FORWARD policy) are installed once per network, as
// Docker does, not per container as CNI's bridge plugin (ipMasq) and
// firewall plugin do: those ran 19 iptables executions for each
// container's join and 11 for its leave, 252 ms against 99 ms now
// (TestBenchNetworkJoin, docs/performance.md). A network's rules carry its name in a comment;
// they live in two chains of Lodge's own, each jumped to once from the
// built-in chain, and go with `lodge network rm`. Each join checks them
// with one iptables-save and adds what is missing (after a reboot or a
// flush), under a lock.
const (
	natChain      = "LODGE-POSTROUTING" // nat: jumped to from POSTROUTING
	forwardChain  = "LODGE-FORWARD"     // filter: jumped to from FORWARD, first
	rulesLockPath = "/run/lodge/network-rules.lock"
)

// netRule is one iptables rule: its table, chain and specification;
// first rules go to the top of their chain, ahead of every other
// network's.
type netRule struct {
	table, chain string
	spec         []string
	first        bool
}

// netPolicy is what a network's list says of its rules: its subnet (""
// when its plugins make their own), its bridge, and whether it is
// internal (no way out of it).
type netPolicy struct {
	subnet, bridge string
	internal       bool
	noICC          bool // docker's enable_icc=false
}

// args are the iptables arguments that do op (-A, -I 1, -D, -C) with r.
func (r netRule) args(op ...string) []string {
	return slices.Concat([]string{"-w", "-t", r.table}, op[:1], []string{r.chain}, op[1:], r.spec)
}

// jumpRules send the built-in chains' traffic through Lodge's chains.
var jumpRules = []netRule{
	{"nat", "POSTROUTING", []string{"-m", "comment", "--comment", "lodge networks", "-j", natChain}, false},
	{"filter", "FORWARD", []string{"-m", "comment", "--comment", "lodge networks", "-j", forwardChain}, true},
}

// networkRules are network name's rules. Its subnet's traffic is
// masqueraded as it leaves (but multicast), and what comes from it and
// the replies to it are accepted. An internal network has no way out: no
// NAT, and what enters or leaves its bridge from or to another interface
// is dropped, ahead of every other network's rules, so that a guest that
// forges another network's source address is dropped all the same.
func networkRules(name string, p netPolicy) []netRule {
	c := func(rest ...string) []string {
		return slices.Concat(rest[:len(rest)-2], []string{"-m", "comment", "--comment", "lodge network " + name}, rest[len(rest)-2:])
	}
	var rules []netRule
	if p.noICC { // ahead of the internal network's acceptance
		rules = append(rules, netRule{"filter", forwardChain, c("-i", p.bridge, "-o", p.bridge, "-j", "DROP"), true})
	}
	if p.internal {
		return append(rules, []netRule{
			{"filter", forwardChain, c("-i", p.bridge, "-o", p.bridge, "-j", "ACCEPT"), true},
			{"filter", forwardChain, c("-i", p.bridge, "-j", "DROP"), true},
			{"filter", forwardChain, c("-o", p.bridge, "-j", "DROP"), true},
		}...)
	}
	return append(rules, []netRule{
		{"nat", natChain, c("-s", p.subnet, "-d", "224.0.0.0/4", "-j", "RETURN"), false},
		{"nat", natChain, c("-s", p.subnet, "!", "-d", p.subnet, "-j", "MASQUERADE"), false},
		{"filter", forwardChain, c("-d", p.subnet, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"), false},
		{"filter", forwardChain, c("-s", p.subnet, "-j", "ACCEPT"), false},
	}...)
}

// savedRules is what iptables-save shows: per table, its chains and its
// rules as "-A CHAIN SPEC" lines.
type savedRules map[string]struct {
	chains []string
	rules  []string
}

func parseSave(out []byte) savedRules {
	s := savedRules{}
	table := ""
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case strings.HasPrefix(l, ":") && table != "":
			t := s[table]
			t.chains = append(t.chains, strings.Fields(l[1:])[0])
			s[table] = t
		case strings.HasPrefix(l, "-A ") && table != "":
			t := s[table]
			t.rules = append(t.rules, l)
			s[table] = t
		}
	}
	return s
}

// has reports whether r is among the saved rules. iptables-save writes a
// rule's specification in its own order and quoting, which for Lodge's
// rules is the order they were given in, with the comment quoted.
func (s savedRules) has(r netRule) bool {
	want := "-A " + r.chain + " " + quoteSpec(r.spec)
	return slices.Contains(s[r.table].rules, want)
}

// quoteSpec writes spec as iptables-save does: arguments with a space in
// double quotes.
func quoteSpec(spec []string) string {
	out := make([]string, len(spec))
	for i, a := range spec {
		if strings.ContainsAny(a, " \t") {
			a = `"` + a + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// iptables runs iptables with args; its output is part of the error.
func iptables(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// lockRules takes the host's lock on Lodge's iptables rules (its
// directory is a tmpfs's: made after a boot by the first to need it).
func lockRules(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(rulesLockPath), 0o755); err != nil {
		return nil, err
	}
	unlock, err := filelock.Lock(ctx, rulesLockPath, true)
	if err != nil {
		return nil, fmt.Errorf("network rules lock: %w", err)
	}
	return unlock, nil
}

// ensureNetworkRules installs what is missing of network name's rules
// (and Lodge's chains and jumps).
func ensureNetworkRules(ctx context.Context, name string, p netPolicy) error {
	if p.noICC {
		if err := bridgeFiltered(); err != nil { // else bridged traffic passes no rule
			return err
		}
	}
	saved, unlock, err := lockedRules(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	for _, ch := range []netRule{{table: "nat", chain: natChain}, {table: "filter", chain: forwardChain}} {
		if !slices.Contains(saved[ch.table].chains, ch.chain) {
			if err := iptables(ctx, "-w", "-t", ch.table, "-N", ch.chain); err != nil {
				return err
			}
		}
	}
	// Forwarding is accepted ahead of what the host's FORWARD chain holds
	// (Docker's and others' rules, a DROP policy); NAT comes after.
	rules := append(slices.Clone(jumpRules), networkRules(name, p)...)
	// The first rules are inserted at the top last to first, so that
	// they keep their order there.
	for i := len(rules) - 1; i >= 0; i-- {
		if r := rules[i]; r.first && !saved.has(r) {
			if err := iptables(ctx, r.args("-I", "1")...); err != nil {
				return err
			}
		}
	}
	for _, r := range rules {
		if !r.first && !saved.has(r) {
			if err := iptables(ctx, r.args("-A")...); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeNetworkRules deletes network name's rules; Lodge's chains and
// jumps stay for the other networks. Rules already gone are no error.
func removeNetworkRules(ctx context.Context, name string, p netPolicy) error {
	unlock, err := lockRules(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, r := range networkRules(name, p) {
		if exec.CommandContext(ctx, "iptables", r.args("-C")...).Run() != nil {
			continue
		}
		errs = append(errs, iptables(ctx, r.args("-D")...))
	}
	return errors.Join(errs...)
}

// confRules is the policy of a network list whose NAT and forwarding
// are Lodge's (no firewall plugin, the bridge without ipMasq), or none
// (no subnet) for a list that leaves them to its plugins (one written
// before: each container's plugins then make its rules, as they did).
func confRules(conf []byte) netPolicy {
	l, ok := parseList(conf)
	if !ok {
		return netPolicy{}
	}
	var p netPolicy
	for _, pl := range l.Plugins {
		switch {
		case pl.Type == "firewall", pl.Type == "bridge" && pl.IPMasq:
			return netPolicy{}
		case pl.Type == "bridge" && len(pl.IPAM.Ranges) == 1 && len(pl.IPAM.Ranges[0]) == 1:
			p.subnet, p.bridge = pl.IPAM.Ranges[0][0].Subnet, pl.Bridge
		}
	}
	if _, n, err := net.ParseCIDR(p.subnet); err != nil || n.String() != p.subnet || p.bridge == "" {
		return netPolicy{}
	}
	p.internal = l.Lodge.Internal
	p.noICC = l.Lodge.ICC != nil && !*l.Lodge.ICC
	return p
}
