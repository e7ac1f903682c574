package sandboxsvc

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
)

// maxDests bounds each of a request's egress lists.
const maxDests = 64

// parseDests reads IPv4 addresses and CIDRs (what lodge run's
// --allow-out and --deny-out take) into canonical prefixes.
func parseDests(field string, in []string) ([]netip.Prefix, error) {
	if len(in) > maxDests {
		return nil, fmt.Errorf("%s: at most %d destinations", field, maxDests)
	}
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s %q: want an IPv4 address or CIDR (names are not followed)", field, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%s %q: sandboxes' networks are IPv4", field, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// checkEgress refuses a request's allow_out and deny_out when they are
// malformed, when the sandbox has no network, or when an allowed
// destination overlaps one the service denies (which would not be
// reached all the same: said rather than ignored).
func (s *Service) checkEgress(r *CreateRequest) error {
	if len(r.AllowOut)+len(r.DenyOut) > 0 && r.Network != "bridge" {
		return badRequest{`allow_out and deny_out: the sandbox has no network (ask for "network": "bridge")`}
	}
	cidrs, names := splitDests(r.AllowOut)
	if len(names) > 0 && s.cfg.EgressProxy == 0 {
		return badRequest{fmt.Sprintf("allow_out %q: names need the service's egress proxy (serve --egress-proxy-port); give addresses or CIDRs", names[0])}
	}
	allow, err := parseDests("allow_out", cidrs)
	if err != nil {
		return badRequest{err.Error()}
	}
	if _, err := parseDests("deny_out", r.DenyOut); err != nil {
		return badRequest{err.Error()}
	}
	for i, a := range allow {
		if j := slices.IndexFunc(s.denied, a.Overlaps); j >= 0 {
			return badRequest{fmt.Sprintf("allow_out %q: overlaps %s, which this service lets no sandbox reach", cidrs[i], s.denied[j])}
		}
	}
	return nil
}

// SetEgress replaces a bridged sandbox's allow_out and deny_out, at once
// (the service's deny set stays above them).
func (s *Service) SetEgress(ctx context.Context, id string, allow, deny []string) (Sandbox, error) {
	sb, err := s.Get(id)
	if err != nil {
		return Sandbox{}, err
	}
	if sb.Network != "bridge" {
		return Sandbox{}, badRequest{`allow_out and deny_out: the sandbox has no network (it was made without "network": "bridge")`}
	}
	if err := s.checkEgress(&CreateRequest{Network: sb.Network, AllowOut: allow, DenyOut: deny}); err != nil {
		return Sandbox{}, err
	}
	if err := s.run.SetEgress(ctx, id, s.egressArgs(allow, deny)); err != nil {
		return Sandbox{}, err
	}
	sb, err = s.change(id, func(c *Sandbox) { c.AllowOut, c.DenyOut = allow, deny })
	if err == nil {
		s.happened("updated", sb, "network")
	}
	return sb, err
}

// egressArgs are lodge run's (and update's) egress flags for a request's
// lists: its addresses, the service's deny set ahead of its own, and the
// proxy where it names hosts.
func (s *Service) egressArgs(allow, deny []string) Egress {
	cidrs, names := splitDests(allow)
	e := Egress{Allow: cidrs, Deny: slices.Concat(s.cfg.DenyOut, deny)}
	if len(names) > 0 {
		e.Proxy, e.DNS = s.cfg.EgressProxy, s.cfg.EgressDNS
	}
	return e
}
