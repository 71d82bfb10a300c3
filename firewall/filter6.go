package firewall

import (
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"go4.org/netipx"
)

// The IPv6 side of input_policy, forward_policy and [[firewall.deny]]
// (docs/ipv6.md): with an uplink with ipv6 on, the IPv6 firewall (table
// ip6 uplinkd6; ip6tables chains UPLINKD-IN6, UPLINKD-FWD6, UPLINKD-DENY6)
// filters IPv6 input and forwarding as the IPv4 one does IPv4:
//
//   - the deny list first: its IPv6 sources and its MACs, drop, or reject
//     with a TCP reset or ICMPv6 port unreachable;
//   - input with policy drop keeps established and related traffic,
//     loopback, the LAN interface, what IPv6 needs to work (icmp6Input,
//     RFC 4890 4.4: errors, neighbour discovery, router advertisements,
//     MLD, echo requests) and DHCPv6 replies to the PD client (udp 546
//     from a link-local address); an uplink with [uplink.firewall] is
//     decided by its own IPv6 filter (Filter6), as for IPv4;
//   - forward with policy drop keeps established and related traffic,
//     ICMPv6 errors (RFC 4890 4.3.1: path MTU discovery must work for
//     every connection) and what comes from the LAN interface, as the
//     IPv4 forward policy does. Unlike IPv4 it does not accept DNATed
//     traffic: IPv6 has no [[service]], and in [lan.ipv6] mode npt every
//     inbound connection to the LAN's outside /64 is DNATed by the NPT
//     mapping, so "ct status dnat" would open the LAN to the world.
//
// *Why table ip6 uplinkd6 and not an inet table*: the IPv4 table `ip
// uplinkd` must stay exactly what it was for an IPv4-only config (and it is
// diffed rule by rule); an inet table's base chains would see IPv4 packets
// as well and its drop policy would have to exclude them. The IPv6 state
// already lives in table ip6 uplinkd6 (NPT, marks, counters, the uplinks'
// IPv6 input filters), which is replaced whole on every IPv6 change and
// deleted when IPv6 is turned off.

// icmp6Always are the ICMPv6 types every interface keeps open, a filtered
// uplink too (RFC 4890 4.4.1, traffic that must not be dropped): the
// errors (destination unreachable, packet too big, time exceeded,
// parameter problem), MLD (query, report, done, v2 report: a snooping
// switch that sees no MLD stops forwarding the solicited-node multicast
// neighbour discovery needs), router advertisement, neighbour
// solicitation and advertisement, redirect.
var icmp6Always = []uint8{1, 2, 3, 4, 130, 131, 132, 134, 135, 136, 137, 143}

// icmp6Forward are the ICMPv6 types forwarded with forward_policy drop
// whatever their connection state: the errors.
var icmp6Forward = []uint8{1, 2, 3, 4}

// icmp6Echo is the ICMPv6 echo request.
const icmp6Echo = 128

// icmp6Input are the ICMPv6 types input_policy drop keeps open:
// icmp6Always and echo requests (a router answers ping6, RFC 4890 4.4.1).
// An uplink with [uplink.firewall] answers echo requests only when its
// icmp_types allow them (icmp6Kept).
func icmp6Input() []uint8 { return append(slices.Clone(icmp6Always), icmp6Echo) }

// deny6Wanted reports whether the IPv6 firewall filters by the deny list.
func deny6Wanted(rs Ruleset) bool { return rs.IPv6 && !rs.Deny.Empty6() }

// input6Wanted and forward6Wanted report whether the IPv6 firewall has
// an input or a forward chain.
func input6Wanted(rs Ruleset) bool {
	return len(rs.Filters6) > 0 || rs.IPv6 && rs.InputPolicy == Drop || deny6Wanted(rs)
}

func forward6Wanted(rs Ruleset) bool {
	return rs.IPv6 && rs.ForwardPolicy == Drop || deny6Wanted(rs)
}

// input6Policy is the policy of the IPv6 input chain: the configured one
// while the IPv6 firewall applies it.
func input6Policy(rs Ruleset) Policy {
	if rs.IPv6 {
		return rs.InputPolicy
	}
	return Accept
}

// icmp6Rules accept the ICMPv6 types.
func icmp6Rules(types []uint8) []nftRule {
	var out []nftRule
	for _, t := range types {
		out = append(out, r("icmpv6", icmp6TypePart{t}, vAccept))
	}
	return out
}

// deny6Chain is the IPv6 deny list's chain and sets in table ip6
// uplinkd6 (nil without IPv6 deny entries).
func deny6Chain(rs Ruleset) (*nftChain, []*nftSet) {
	if !deny6Wanted(rs) {
		return nil, nil
	}
	return denyChain(rs.Deny.DropAddrs6, rs.Deny.RejectAddrs6, rs.Deny, true)
}

// policy6Chains are the IPv6 firewall's input and forward base chains,
// the uplinks' input filter chains, the deny chain and their sets.
func policy6Chains(rs Ruleset) ([]*nftChain, []*nftSet) {
	var chains []*nftChain
	deny, sets := deny6Chain(rs)
	if input6Wanted(rs) {
		input := &nftChain{name: "input", typ: nftables.ChainTypeFilter, hook: "input", priority: "filter", policy: input6Policy(rs)}
		if deny != nil {
			input.rules = append(input.rules, r("deny list", vJump(nftChainDeny)))
		}
		inChains, meters := filter6Chains(rs.Filters6, input)
		sets = append(sets, meters...)
		if input.policy == Drop {
			extra := append([]nftRule{r("loopback", ifnamePart{name: "lo"}, vAccept)}, icmp6Rules(icmp6Input())...)
			keepRules(input, rs.LANInterface, append(extra, r("dhcpv6 client", dhcp6ClientPart{}, vAccept))...)
		}
		chains = append(append(chains, input), inChains...)
	}
	if forward6Wanted(rs) {
		fwd := &nftChain{name: "forward", typ: nftables.ChainTypeFilter, hook: "forward", priority: "filter", policy: rs.ForwardPolicy}
		if deny != nil {
			fwd.rules = append(fwd.rules, r("deny list", vJump(nftChainDeny)))
		}
		if fwd.policy == Drop {
			keepRules(fwd, rs.LANInterface, icmp6Rules(icmp6Forward)...)
		}
		chains = append(chains, fwd)
	}
	if deny != nil {
		chains = append(chains, deny)
	}
	return chains, sets
}

// ---- IPv6 prefix lists (the deny sets): merged and subtracted by
// mergePrefixes and subtractPrefixes (netipx, both families). ----

// intervalElems6 is intervalElems for an IPv6 interval set, encoded as
// nft does: a leading end element at :: when the first range does not
// start there, then per range its start and an end element one past it.
func intervalElems6(ps []netip.Prefix) []nftables.SetElement {
	var b netipx.IPSetBuilder
	addPrefixes(&b, ps)
	rs := ipSet(&b).Ranges()
	var out []nftables.SetElement
	if len(rs) > 0 && rs[0].From() != netip.IPv6Unspecified() {
		out = append(out, nftables.SetElement{Key: make([]byte, 16), IntervalEnd: true})
	}
	for _, r := range rs {
		lo := r.From().As16()
		out = append(out, nftables.SetElement{Key: lo[:]})
		if next := r.To().Next(); next.IsValid() {
			hi := next.As16()
			out = append(out, nftables.SetElement{Key: hi[:], IntervalEnd: true})
		}
	}
	return out
}
