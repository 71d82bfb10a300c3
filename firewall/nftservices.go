package firewall

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftables rendering of the [[service]] part of a Ruleset (see services.go
// for the design).

const nftChainNATPre = "nat_prerouting"

func nftServiceChain(s ServiceRules) string { return "svc_" + s.Chain }

// nftRehashChain hashes the clients of dead backends again.
func nftRehashChain(s ServiceRules) string { return nftServiceChain(s) + "_rehash" }

// ctReplyPart matches packets in the reply direction of their connection.
type ctReplyPart struct{}

func (ctReplyPart) text() string { return "ct direction reply" }

func (ctReplyPart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
	}
}

func (ctReplyPart) ipt(w *iptWriter, _ int) int { return w.match("conntrack", "--ctdir", "REPLY") }

// ltExprs compares a host-order number in register 1 with "< lt", the way
// nft does: converted to network order first, since cmp compares bytes.
func ltExprs(lt uint32) []expr.Any {
	return []expr.Any{
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint32(lt)},
	}
}

// numgenPart: an incrementing counter of the packets reaching the rule
// (mod mod) is below lt: w of every mod packets match, in a row.
type numgenPart struct{ mod, lt uint32 }

func (p numgenPart) text() string { return fmt.Sprintf("numgen inc mod %d < %d", p.mod, p.lt) }

func (p numgenPart) exprs(*exprBuilder) []expr.Any {
	return append([]expr.Any{&expr.Numgen{Register: 1, Modulus: p.mod, Type: unix.NFT_NG_INCREMENTAL}}, ltExprs(p.lt)...)
}

// ipt is lt rules: -m statistic counts only the packets reaching its own
// rule, so the j-th takes every (mod-j)-th of them, and together they take
// lt of every mod connections, as numgen does (every 1st needs no match).
func (p numgenPart) ipt(w *iptWriter, i int) int {
	if every := p.mod - uint32(i); every > 1 {
		w.match("statistic", "--mode", "nth", "--every", fmt.Sprint(every), "--packet", "0")
	}
	return int(p.lt)
}

// jhashPart: the Jenkins hash of the source address (mod mod) is below lt.
// The rules before it took the hashes below lo, so nftables compares with
// lt only; iptables' cluster match names the slots [lo, lt) as a mask.
type jhashPart struct{ mod, seed, lo, lt uint32 }

func (p jhashPart) text() string {
	return fmt.Sprintf("jhash ip saddr mod %d seed 0x%x < %d", p.mod, p.seed, p.lt)
}

func (p jhashPart) exprs(*exprBuilder) []expr.Any {
	return append([]expr.Any{
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Hash{SourceRegister: 2, DestRegister: 1, Length: 4, Modulus: p.mod, Seed: p.seed, Type: expr.HashTypeJenkins},
	}, ltExprs(p.lt)...)
}

func (p jhashPart) ipt(w *iptWriter, _ int) int {
	mask := uint32(1)<<p.lt - uint32(1)<<p.lo
	return w.match("cluster", "--cluster-local-nodemask", fmt.Sprintf("0x%08x", mask),
		"--cluster-total-nodes", fmt.Sprint(p.mod), "--cluster-hash-seed", fmt.Sprintf("0x%08x", p.seed))
}

// dnatPart rewrites the destination to a backend's address and port.
type dnatPart struct{ to netip.AddrPort }

func (p dnatPart) text() string { return "dnat to " + p.to.String() }

func (p dnatPart) exprs(*exprBuilder) []expr.Any {
	a := p.to.Addr().As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(p.to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func (p dnatPart) ipt(w *iptWriter, _ int) int {
	return w.target("DNAT", "--to-destination", p.to.String())
}

// nftHashRules picks among bs by source hash, cumulative weight ranges in
// order; a Down backend's range jumps to rehash instead.
func nftHashRules(s ServiceRules, bs []WeightedBackend, rehash string) []nftRule {
	var out []nftRule
	proto := l4protoPart{s.Proto}
	total, cum := uint32(slots(bs)), uint32(0)
	for i, b := range bs {
		var parts []nftPart
		if i < len(bs)-1 {
			parts = append(parts, jhashPart{total, serviceSeedNonZero(s), cum, cum + uint32(b.Weight)})
			cum += uint32(b.Weight)
		}
		if b.Down {
			// iptables names the protocol in this rule too.
			parts = append([]nftPart{iptOnly{proto}}, parts...)
			out = append(out, r("backend "+b.Addr.String()+" down", append(parts, vJump(rehash))...))
			continue
		}
		out = append(out, r("backend "+b.Addr.String(), append([]nftPart{proto}, append(parts, dnatPart{b.Addr})...)...))
	}
	return out
}

// serviceSeedNonZero: a jhash without a seed gets a random one from the
// kernel, which would move every client on each table rewrite.
func serviceSeedNonZero(s ServiceRules) uint32 { return max(s.Seed, 1) }

// nftServiceMatch matches the packets of one entry: input interface,
// destination address and port.
func nftServiceMatch(s ServiceRules, e ServiceEntry) []nftPart {
	return []nftPart{
		ifnamePart{name: e.Iface},
		addrPart{dst: true, ps: []netip.Prefix{netip.PrefixFrom(e.Addr, 32)}},
		dportPart{s.Proto, []uint16{s.Port}},
	}
}

func entryComment(s ServiceRules, e ServiceEntry) string {
	if e.Hairpin {
		return fmt.Sprintf("service %s hairpin %s", s.Name, e.Uplink)
	}
	return fmt.Sprintf("service %s on %s", s.Name, e.Uplink)
}

// nftServices adds the services' rules to the chains of buildRules and
// returns the chains and sets of their own.
func nftServices(rs Ruleset, pre, input *nftChain) (chains []*nftChain, sets []*nftSet) {
	natPre := &nftChain{name: nftChainNATPre, typ: nftables.ChainTypeNAT, hook: "prerouting", priority: "dstnat", policy: Accept}
	for _, s := range rs.Services {
		c := &nftChain{name: nftServiceChain(s)}
		for _, e := range s.Entries {
			natPre.rules = append(natPre.rules, r(entryComment(s, e), append(nftServiceMatch(s, e), vJump(c.name))...))
			// Only reached when nothing DNATed the packet: no backend.
			reject := rejectPart{tcpReset: s.Proto == protoTCP}
			input.rules = append(input.rules, r(fmt.Sprintf("service %s: no healthy backend", s.Name),
				append(nftServiceMatch(s, e), ctStatePart{ctNew}, reject)...))
			if l := s.Limit; l != nil && !e.Hairpin {
				pre.rules = append(pre.rules, r(fmt.Sprintf("service %s limit", s.Name),
					append(nftServiceMatch(s, e), ctStatePart{ctNew}, meterPart{l: *l}, vDrop)...))
			}
		}
		if l := s.Limit; l != nil {
			sets = append(sets, &nftSet{name: l.Name, keyType: nftables.TypeIPAddr, dynamic: true, timeout: l.Expire, size: 65535})
		}
		proto := l4protoPart{s.Proto}
		if s.Balance == "weighted" {
			left := uint32(s.Slots())
			for i, b := range s.Backends {
				comment := "backend " + b.Addr.String()
				if i == len(s.Backends)-1 {
					// Takes all that is left (left == b.Weight), which
					// nftables needs no match for; iptables' statistic
					// match takes one rule per weight unit.
					c.rules = append(c.rules, r(comment, proto, iptOnly{numgenPart{left, left}}, dnatPart{b.Addr}))
					break
				}
				c.rules = append(c.rules, r(comment, proto, numgenPart{left, uint32(b.Weight)}, dnatPart{b.Addr}))
				left -= uint32(b.Weight)
			}
			chains = append(chains, c)
			continue
		}
		if len(s.Buckets) == 0 {
			c.rules = nftHashRules(s, s.Backends, "")
			chains = append(chains, c)
			continue
		}
		rehash := &nftChain{name: nftRehashChain(s), rules: nftHashRules(s, s.Backends, "")}
		c.rules = nftHashRules(s, s.Buckets, rehash.name)
		chains = append(chains, c, rehash)
	}
	if len(natPre.rules) > 0 {
		chains = append([]*nftChain{natPre}, chains...)
	}
	return chains, sets
}
