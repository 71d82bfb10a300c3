package firewall

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/uplinkd/uplinkd/policy"
)

// Inbound services ([[service]]): a public port on uplinks DNATed to one
// healthy LAN backend. The design, shared by both backends:
//
//   - DNAT happens in a nat prerouting chain, which the kernel runs for the
//     first packet of a connection only. A change of the backend set
//     therefore never moves or breaks an established connection, and
//     uplinkd never deletes a service's conntrack entries when a backend
//     goes (only when the uplink's address changes, as for every
//     connection of the uplink).
//   - A connection is matched by the uplink's current address and the
//     port, on the uplink's interface (and on the LAN interface for
//     hairpin). The address comes from the same pass as SNAT's, so the
//     service follows a redial in that pass.
//   - Only healthy backends are in the set. With none, nothing is DNATed:
//     the packet is addressed to the router, and the input chain rejects
//     it (TCP reset, or ICMP port unreachable for UDP) instead of letting
//     it time out or reach a local daemon on that port.
//   - weighted: weighted round robin. Weights are divided by their
//     greatest common divisor; nftables picks with `numgen inc mod R < w`
//     per backend (R the weight left after the backends before it), the
//     iptables backend with one `-m statistic --mode nth` rule per weight
//     unit. Both hand out exactly w_i of every sum(w) new connections.
//   - source-hash: a hash of the source address picks the backend, so a
//     client keeps its backend (CLUSTERIP hashmode=sourceip). nftables
//     compares `jhash ip saddr mod S` with each backend's cumulative weight;
//     the iptables backend uses `-m cluster` (a Jenkins hash of the source
//     address, at most 32 slots, which the loader enforces). The buckets
//     are those of every configured backend, so a client of a healthy
//     backend keeps it when another one dies; only the clients of the dead
//     one are hashed again, over the healthy ones (a rehash chain), until
//     it comes back.
//   - The per-source limit drops new connections above the rate in the
//     mangle prerouting hook, before DNAT, with the [uplink.firewall] limit
//     semantics (RateLimit).
//   - Replies: a connection entering through an uplink carries that
//     uplink's mark in its conntrack mark (see the package doc); the
//     backend's replies, arriving on the LAN interface in the reply
//     direction, get it restored into the packet mark, so the sticky
//     `fwmark` rule routes them back out through that uplink even when
//     another uplink holds the default route.
//   - Hairpin: LAN clients connecting to the uplink's address are DNATed
//     too, and DNATed connections from the LAN networks back into the LAN
//     are masqueraded to the router's LAN address, so the backend answers
//     through the router.

// ServiceRules is one [[service]] in the Ruleset.
type ServiceRules struct {
	Name string
	// Chain is the name of its own chain (after the backend's prefix).
	Chain string
	Proto uint8
	Port  uint16
	// Balance is policy.BalanceWeighted or policy.BalanceSourceHash.
	Balance policy.Balance
	// Seed of the source hash: derived from the name, so a restart keeps
	// every client on its backend.
	Seed uint32
	// Entries are where the service is reached: one per uplink with an
	// address, plus the same address from the LAN interface with hairpin.
	Entries []ServiceEntry
	// Backends are the healthy backends, in configuration order, with
	// their weights divided by the weights' greatest common divisor. Empty:
	// new connections are rejected.
	Backends []WeightedBackend
	// Buckets is set for source-hash while some but not all backends are
	// healthy: every configured backend (weights divided by their gcd) with
	// its health. A client whose bucket belongs to a healthy backend keeps
	// it whatever happens to the others; the buckets of dead backends are
	// hashed again over Backends.
	Buckets []WeightedBackend
	// Limit, if set, drops new connections from one source above the rate.
	Limit *RateLimit
}

// ServiceEntry is one address and interface a service is reached on.
type ServiceEntry struct {
	Uplink string
	// Iface is the input interface: the uplink's, or the LAN's for a
	// hairpin entry.
	Iface   string
	Addr    netip.Addr
	Hairpin bool
}

// WeightedBackend is one backend of a service.
type WeightedBackend struct {
	Addr   netip.AddrPort
	Weight int
	// Down is set only in ServiceRules.Buckets.
	Down bool
}

// Slots is the sum of the weights of Backends.
func (s ServiceRules) Slots() int { return slots(s.Backends) }

func slots(bs []WeightedBackend) int {
	n := 0
	for _, b := range bs {
		n += b.Weight
	}
	return n
}

// computeServices fills rs.Services and rs.HairpinSources. healthy is
// Input.Healthy.
func computeServices(rs *Ruleset, cfg *policy.Config, state map[string]policy.UplinkState, healthy map[string][]netip.AddrPort) {
	chains := map[string]bool{}
	hairpin := false
	for i, s := range cfg.Services {
		sr := ServiceRules{Name: s.Name, Proto: protoNumber(s.Proto), Port: s.Port, Balance: s.Balance, Seed: serviceSeed(s.Name)}
		sr.Chain = sanitize(s.Name)
		if chains[sr.Chain] {
			sr.Chain = fmt.Sprintf("%s_%d", sr.Chain, i)
		}
		chains[sr.Chain] = true
		lanHairpin := s.Hairpin && cfg.LAN.Interface != ""
		for _, name := range s.Uplinks {
			u := cfg.UplinkByName(name)
			st, ok := state[name]
			if u == nil || !ok || !st.Addr.Is4() {
				continue // no address: nothing can arrive
			}
			sr.Entries = append(sr.Entries, ServiceEntry{Uplink: name, Iface: u.Interface, Addr: st.Addr})
			if lanHairpin {
				sr.Entries = append(sr.Entries, ServiceEntry{Uplink: name, Iface: cfg.LAN.Interface, Addr: st.Addr, Hairpin: true})
				hairpin = true
			}
		}
		up, checked := healthy[s.Name]
		var all []WeightedBackend
		for _, b := range s.Backends {
			wb := WeightedBackend{Addr: b.Address, Weight: max(b.Weight, 1), Down: checked && !slices.Contains(up, b.Address)}
			all = append(all, wb)
			if !wb.Down {
				sr.Backends = append(sr.Backends, wb)
			}
		}
		reduceWeights(sr.Backends)
		if sr.Balance == policy.BalanceSourceHash && len(sr.Backends) > 0 && len(sr.Backends) < len(all) {
			reduceWeights(all)
			sr.Buckets = all
		}
		if l := s.Limit; l != nil {
			rl := newRateLimit(sr.Proto, s.Port, l.Hits, l.Seconds, "svc_lim_"+sr.Chain)
			sr.Limit = &rl
		}
		rs.Services = append(rs.Services, sr)
	}
	if hairpin {
		for _, p := range cfg.LAN.Networks {
			rs.HairpinSources = append(rs.HairpinSources, p.Masked())
		}
		rs.HairpinSources = mergePrefixes(rs.HairpinSources)
	}
}

// reduceWeights divides the weights by their greatest common divisor.
func reduceWeights(bs []WeightedBackend) {
	g := 0
	for _, b := range bs {
		for x := b.Weight; x != 0; {
			g, x = x, g%x
		}
	}
	for i := range bs {
		if g > 1 {
			bs[i].Weight /= g
		}
	}
}

// serviceSeed is a stable hash seed per service name.
func serviceSeed(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}
