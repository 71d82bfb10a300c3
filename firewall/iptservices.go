package firewall

import (
	"fmt"
	"hash/fnv"
)

// iptables rendering of the [[service]] part of a Ruleset (see services.go
// for the design; the rules mirror nftservices.go).

// iptNATPrerouting is our chain in the nat table's PREROUTING (the mangle
// table has a chain of the same name; tables are separate namespaces).
const (
	iptNATPrerouting = ChainPrefix + "PREROUTING"
	iptSvcPrefix     = ChainPrefix + "SVC-"
	iptChainNameMax  = 28 // XT_EXTENSION_MAXNAMELEN - 1
)

// iptServiceChain names a service's chain, shortened with a hash of the
// full name when it would not fit.
func iptServiceChain(s ServiceRules) string { return iptServiceChainWith(s, "") }

// iptRehashChain is the chain that hashes the clients of dead backends
// again (source-hash).
func iptRehashChain(s ServiceRules) string { return iptServiceChainWith(s, "-RH") }

func iptServiceChainWith(s ServiceRules, tail string) string {
	name := iptSvcPrefix + s.Chain
	if len(name)+len(tail) <= iptChainNameMax {
		return name + tail
	}
	h := fnv.New32a()
	h.Write([]byte(s.Chain))
	suffix := fmt.Sprintf("-%04x", h.Sum32()&0xffff)
	return name[:iptChainNameMax-len(suffix)-len(tail)] + suffix + tail
}

func iptServiceMatch(s ServiceRules, e ServiceEntry) []string {
	return append([]string{"-i", e.Iface, "-d", e.Addr.String() + "/32"}, iptPorts(s.Proto, []uint16{s.Port})[0]...)
}

// iptServices adds the services' rules to the tables of buildIPT.
func iptServices(rs Ruleset, mangle, nat, filter *iptTable) {
	for _, s := range rs.Services {
		chain := iptServiceChain(s)
		nat.chain(chain)
		for _, e := range s.Entries {
			nat.add(iptNATPrerouting, append(iptServiceMatch(s, e), "-j", chain)...)
			reject := []string{"-j", "REJECT", "--reject-with", "icmp-port-unreachable"}
			if s.Proto == protoTCP {
				reject = []string{"-j", "REJECT", "--reject-with", "tcp-reset"}
			}
			filter.add(iptInput, append(append(iptServiceMatch(s, e), "-m", "conntrack", "--ctstate", "NEW"), reject...)...)
			if l := s.Limit; l != nil && !e.Hairpin {
				mangle.add(iptPrerouting, append(iptServiceMatch(s, e), iptLimitDrop(*l)...)...)
			}
		}
		proto := []string{"-p", iptProto(s.Proto)}
		slots := s.Slots()
		if s.Balance == "weighted" {
			// One rule per weight unit: the k-th takes every (slots-k)-th
			// connection reaching it, so each unit gets one of every slots.
			k := 0
			for _, b := range s.Backends {
				for range b.Weight {
					args := append([]string{}, proto...)
					if k < slots-1 {
						args = append(args, "-m", "statistic", "--mode", "nth", "--every", fmt.Sprint(slots-k), "--packet", "0")
					}
					nat.add(chain, append(args, "-j", "DNAT", "--to-destination", b.Addr.String())...)
					k++
				}
			}
			continue
		}
		if len(s.Buckets) == 0 {
			iptHashRules(nat, chain, s, s.Backends, "")
			continue
		}
		rehash := iptRehashChain(s)
		nat.chain(rehash)
		iptHashRules(nat, chain, s, s.Buckets, rehash)
		iptHashRules(nat, rehash, s, s.Backends, "")
	}
	if len(rs.HairpinSources) > 0 && rs.LANInterface != "" {
		for _, n := range rs.HairpinSources {
			nat.add(iptPostrouting, "-s", iptPrefix(n), "-o", rs.LANInterface, "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE")
		}
	}
}

// iptHashRules picks among bs by source hash: -m cluster hashes the
// connection's original source address into slots buckets, and a backend
// owns its weight's worth of them; a Down backend's buckets jump to rehash.
func iptHashRules(nat *iptTable, chain string, s ServiceRules, bs []WeightedBackend, rehash string) {
	total, cum := slots(bs), 0
	for i, b := range bs {
		args := []string{"-p", iptProto(s.Proto)}
		if i < len(bs)-1 {
			mask := uint32(1)<<(cum+b.Weight) - uint32(1)<<cum
			args = append(args, "-m", "cluster", "--cluster-local-nodemask", fmt.Sprintf("0x%08x", mask),
				"--cluster-total-nodes", fmt.Sprint(total), "--cluster-hash-seed", fmt.Sprintf("0x%08x", serviceSeedNonZero(s)))
		}
		cum += b.Weight
		if b.Down {
			nat.add(chain, append(args, "-j", rehash)...)
			continue
		}
		nat.add(chain, append(args, "-j", "DNAT", "--to-destination", b.Addr.String())...)
	}
}
