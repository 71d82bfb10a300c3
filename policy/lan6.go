package policy

import (
	"net/netip"
)

// The LAN side of IPv6 ([lan.ipv6], docs/ipv6.md): which prefixes each
// uplink delegates to the LAN, the source rules of mode prefix, the
// NPTv6 mappings of mode npt, and the forwarding sysctls. Pure, like the
// rest of Compute; an IPv4-only config, or mode off, adds nothing.

// DelegationSource says where an uplink's delegated prefix comes from.
type DelegationSource string

// Delegation sources: the uplink's delegated_prefix, or the PD client.
const (
	DelegationConfig  DelegationSource = "config"
	DelegationLearned DelegationSource = "learned"
)

// Delegated is an uplink's delegated prefixes: the current one first, then
// former ones still routed (make-before-break; learned ones only). A
// configured delegated_prefix wins over what the PD client reported.
func Delegated(u *Uplink, obs Observed) ([]netip.Prefix, DelegationSource) {
	if u.DelegatedPrefix.IsValid() {
		return []netip.Prefix{u.DelegatedPrefix}, DelegationConfig
	}
	if ps := obs.Delegated[u.Interface]; len(ps) > 0 {
		return ps, DelegationLearned
	}
	return nil, ""
}

// LANSubnet6 is the /64 number n of a delegated prefix p, and false when
// p holds no such /64 (p is longer than /64, or too short for n).
func LANSubnet6(p netip.Prefix, n int) (netip.Prefix, bool) {
	// uint64: on 32-bit ARM an int shift by 32 or more is 0, which refused
	// every subnet of a short prefix.
	if p.Bits() > 64 || n < 0 || (64-p.Bits() < 63 && uint64(n) >= uint64(1)<<(64-p.Bits())) {
		return netip.Prefix{}, false
	}
	b := p.Masked().Addr().As16()
	hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
	hi |= uint64(n)
	for i := range 8 {
		b[i] = byte(hi >> (56 - 8*i))
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 64), true
}

// NPT6 is one NPTv6 mapping of mode npt: traffic leaving Iface from
// Inside has its /64 rewritten to Outside, and traffic arriving on Iface
// for Outside is rewritten back to Inside (RFC 6296).
type NPT6 struct {
	Uplink  string
	Iface   string
	Inside  netip.Prefix
	Outside netip.Prefix
}

// NPT6Maps are the NPTv6 mappings of mode npt, in config order: one per
// uplink with ipv6 on whose current delegated prefix holds the [lan.ipv6]
// subnet. Uplinks without one are left out (the daemon logs why).
func NPT6Maps(cfg *Config, obs Observed) []NPT6 {
	if cfg.LAN.IPv6.Mode != LAN6NPT {
		return nil
	}
	var out []NPT6
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if !u.IPv6 {
			continue
		}
		ps, _ := Delegated(u, obs)
		if len(ps) == 0 {
			continue
		}
		if outside, ok := LANSubnet6(ps[0], cfg.LAN.IPv6.Subnet); ok {
			out = append(out, NPT6{Uplink: u.Name, Iface: u.Interface, Inside: cfg.LAN.IPv6.Prefix, Outside: outside})
		}
	}
	return out
}

// LAN6MainPriority is the priority of mode prefix's `from <delegated
// prefix> lookup main suppress_prefixlength 0` rules: one below the lowest
// rule_priority among the uplinks with ipv6 on, so that main's routes more
// specific than a default (the LAN itself, another LAN, a VPN) are looked
// up before any uplink's table, which holds only a default route. uplink
// is the index of that uplink in cfg.Uplinks; ok is false when no uplink
// has ipv6 on. The loader refuses a priority below 1 or one that another
// rule of uplinkd uses (lan6MainPriority).
func LAN6MainPriority(cfg *Config) (prio, uplink int, ok bool) {
	uplink = -1
	for i := range cfg.Uplinks {
		if u := &cfg.Uplinks[i]; u.IPv6 && (uplink < 0 || u.RulePriority < cfg.Uplinks[uplink].RulePriority) {
			uplink = i
		}
	}
	if uplink < 0 {
		return 0, -1, false
	}
	return cfg.Uplinks[uplink].RulePriority - 1, uplink, true
}

// computeLAN6 adds what [lan.ipv6] needs to d: in mode prefix, for each
// delegated prefix of each uplink with ipv6 on, first a `from <delegated
// prefix> lookup main suppress_prefixlength 0` rule at LAN6MainPriority
// (the wg-quick pattern of the default route, see Compute: LAN traffic to
// a destination main routes more specifically than by a default stays
// off the uplink) and then a `from <delegated prefix> lookup <table>` rule
// at the uplink's rule_priority (both kept whatever the link's state, like
// the prefix itself: with no route in the table the lookup falls
// through); in both modes IPv6 forwarding with [lan] forwarding, and
// accept_ra 2 on the uplinks so that they keep learning their addresses
// and router from router advertisements (a forwarding interface ignores
// them with accept_ra 1).
func computeLAN6(cfg *Config, obs Observed, d *Desired) {
	mode := cfg.LAN.IPv6.Mode
	if mode != LAN6Prefix && mode != LAN6NPT || !cfg.IPv6On() {
		return
	}
	if mode == LAN6Prefix {
		// Before the uplinks' rules, so that Diff adds each before the
		// rule that would send the prefix's traffic out of the uplink.
		prio, _, _ := LAN6MainPriority(cfg)
		seen := map[netip.Prefix]bool{}
		for i := range cfg.Uplinks {
			u := &cfg.Uplinks[i]
			if !u.IPv6 {
				continue
			}
			ps, _ := Delegated(u, obs)
			for _, p := range ps {
				if !seen[p] {
					seen[p] = true
					d.Rules = append(d.Rules, Rule{IPv6: true, Priority: prio, Table: MainTable, Src: p, SuppressDefault: true, Protocol: Protocol})
				}
			}
		}
	}
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if !u.IPv6 {
			continue
		}
		if mode == LAN6Prefix {
			ps, _ := Delegated(u, obs)
			for _, p := range ps {
				d.Rules = append(d.Rules, Rule{IPv6: true, Priority: u.RulePriority, Table: u.Table, Src: p, Protocol: Protocol})
			}
		}
		if cfg.LAN.Forwarding && d.Uplinks[i].Present {
			d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv6/conf/" + u.Interface + "/accept_ra", Value: "2"})
		}
	}
	// After accept_ra (Diff keeps the order): turning forwarding on purges
	// the RA-learned default routers of every interface whose accept_ra is
	// not 2.
	if cfg.LAN.Forwarding {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv6/conf/all/forwarding", Value: "1"})
	}
}
