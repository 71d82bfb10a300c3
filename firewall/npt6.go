package firewall

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The IPv6 state of the firewall (docs/ipv6.md): the input filter of the
// uplinks with ipv6 on and [uplink.firewall], NPTv6, the connection marks,
// and (filter6.go) the IPv6 side of input_policy, forward_policy and the
// deny list.
//
// NPTv6 of [lan.ipv6] mode npt: traffic leaving an uplink
// from the inside /64 has its source /64 rewritten to the uplink's LAN
// /64, and traffic arriving on the uplink for that /64 is rewritten back.
// The mapping follows the outgoing interface, so a failover needs no
// renumbering. ip6tables does it statelessly (SNPT/DNPT, RFC 6296);
// nftables with its NAT engine per connection (see nptNATPart). Both
// backends keep it apart from their
// IPv4 state (nftables: table ip6 uplinkd6; iptables: ip6tables chains
// UPLINKD-NPT6-* and UPLINKD-IN6*), written only while there is IPv6
// state, so an IPv4-only config renders and writes exactly what it did.
//
// The IPv6 input filter of an uplink is its [uplink.firewall] for IPv6:
// established and related traffic, the allowed ports and the limits as
// for IPv4, and always what IPv6 needs to work on the link: ICMPv6 errors
// (path MTU discovery), router advertisements, neighbour discovery,
// redirects and DHCPv6 replies to the client (udp 546 from a link-local
// address; a DHCPv6-PD exchange starts at a multicast address, so
// connection tracking cannot pair the reply). Echo requests pass when
// icmp_types allows the IPv4 echo request (8). Everything else that
// arrives on the uplink is dropped.

// Mark6 is an uplink with ipv6 on: its new IPv6 connections get its
// connection mark as IPv4 ones do, so that its IPv6 connections can be
// deleted when its IPv6 side fails or renumbers (ClearConntrack6ByMark).
type Mark6 struct {
	Uplink   string
	Iface    string
	ConnMark uint32
}

// mark6Chains set the uplink's connection mark on new IPv6 connections
// arriving (prerouting) or leaving (postrouting) through it; and, with a
// LAN interface, restore it into the packet mark of later LAN packets
// (sticky balancing, as buildRules does for IPv4: policy's IPv6 sticky
// rules route them by it, so a change of the multipath default does not
// move an open connection; replies from the LAN to a connection that came
// in through an uplink leave through that uplink).
func mark6Chains(ms []Mark6, lan string) []*nftChain {
	if len(ms) == 0 {
		return nil
	}
	pre := &nftChain{name: "mark-prerouting", typ: nftables.ChainTypeFilter, hook: "prerouting", priority: "mangle", policy: Accept}
	post := &nftChain{name: "mark-postrouting", typ: nftables.ChainTypeFilter, hook: "postrouting", priority: "mangle", policy: Accept}
	if lan != "" {
		for _, m := range ms {
			pre.rules = append(pre.rules, restoreUplinkRule("sticky "+m.Uplink, lan, ctOriginalPart{}, m.ConnMark))
		}
		for _, m := range ms {
			pre.rules = append(pre.rules, restoreUplinkRule("reply via "+m.Uplink, lan, ctReplyPart{}, m.ConnMark))
		}
	}
	for _, m := range ms {
		in, out := connMarkRules("uplink "+m.Uplink, m.Iface, m.ConnMark)
		pre.rules, post.rules = append(pre.rules, in), append(post.rules, out)
	}
	return []*nftChain{pre, post}
}

// Filter6 is the IPv6 input filter of one uplink.
type Filter6 struct {
	Uplink string
	Iface  string
	Filter *InputFilter
}

// icmp6Kept are the ICMPv6 types f lets in: icmp6Always (filter6.go),
// and echo request (128) when its icmp_types allow the IPv4 echo request.
func icmp6Kept(f *InputFilter) []uint8 {
	out := slices.Clone(icmp6Always)
	if slices.Contains(f.ICMPTypes, 8) {
		out = append(out, icmp6Echo)
	}
	return out
}

// NPT6 is one mapping: out of Iface, Inside becomes Outside; into Iface,
// Outside becomes Inside. Both are /64s.
type NPT6 struct {
	Uplink  string
	Iface   string
	Inside  netip.Prefix
	Outside netip.Prefix
}

// Table6Name is the nftables table (family ip6) that holds the NPTv6
// rules.
const Table6Name = "uplinkd6"

var nftTable6 = &nftables.Table{Name: Table6Name, Family: nftables.TableFamilyIPv6}

// Offsets of the IPv6 source and destination addresses in the header.
const (
	ip6SrcOff = 8
	ip6DstOff = 24
)

// iidMask keeps the interface identifier (the low 64 bits).
var iidMask = netip.MustParseAddr("::ffff:ffff:ffff:ffff")

// nptMatchPart matches the interface (oifname or iifname) and the /64 of
// the source or destination address.
type nptMatchPart struct {
	out    bool // oifname and saddr (postrouting); else iifname and daddr
	iface  string
	prefix netip.Prefix
}

func (p nptMatchPart) text() string {
	if p.out {
		return fmt.Sprintf("oifname %q ip6 saddr %s", p.iface, p.prefix)
	}
	return fmt.Sprintf("iifname %q ip6 daddr %s", p.iface, p.prefix)
}

func (p nptMatchPart) exprs(*exprBuilder) []expr.Any {
	key, off := expr.MetaKeyIIFNAME, uint32(ip6DstOff)
	if p.out {
		key, off = expr.MetaKeyOIFNAME, ip6SrcOff
	}
	net := p.prefix.Masked().Addr().As16()
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(p.iface)},
		// A /64: nft loads the first 8 bytes only and compares them.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 8},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net[:8]},
	}
}

// nptNATPart maps the /64 of the source (out: snat) or destination
// (dnat) address to the /64 to, keeping the interface identifier:
// `snat ip6 prefix to` (NF_NAT_RANGE_NETMAP). nftables' NAT engine, not a
// payload rewrite: a stateless `ip6 saddr set ip6 saddr & ... | ...`
// loads into nft 1.0.6, but on the kernels tested the ICMPv6 checksum is
// not updated with it (echo requests arrive with a bad checksum), while
// the NAT engine fixes every checksum, ICMPv6 errors' inner headers too.
type nptNATPart struct {
	out bool
	to  netip.Prefix
}

func (p nptNATPart) text() string {
	verb := "dnat"
	if p.out {
		verb = "snat"
	}
	return fmt.Sprintf("%s ip6 prefix to %s", verb, p.to.Masked())
}

func (p nptNATPart) exprs(*exprBuilder) []expr.Any {
	typ := expr.NATTypeDestNAT
	if p.out {
		typ = expr.NATTypeSourceNAT
	}
	lo, hi := p.to.Masked().Addr().As16(), p.to.Masked().Addr().As16()
	iid := iidMask.As16()
	for i := range hi {
		hi[i] |= iid[i]
	}
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: lo[:]},
		&expr.Immediate{Register: 2, Data: hi[:]},
		&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV6, RegAddrMin: 1, RegAddrMax: 2, Prefix: true},
	}
}

// npt6Chains are the two NAT base chains of table ip6 uplinkd6: the
// source mapping where the packet leaves (postrouting, srcnat), the
// destination mapping of unsolicited inbound traffic to the outside /64
// (prerouting, dstnat); replies follow the connection tracking.
func npt6Chains(maps []NPT6) []*nftChain {
	if len(maps) == 0 {
		return nil
	}
	post := &nftChain{name: "npt-postrouting", typ: nftables.ChainTypeNAT, hook: "postrouting", priority: "srcnat", policy: Accept}
	pre := &nftChain{name: "npt-prerouting", typ: nftables.ChainTypeNAT, hook: "prerouting", priority: "dstnat", policy: Accept}
	for _, m := range maps {
		post.rules = append(post.rules, nftRule{comment: "npt6 " + m.Uplink, parts: []nftPart{
			nptMatchPart{out: true, iface: m.Iface, prefix: m.Inside}, nptNATPart{out: true, to: m.Outside}}})
		pre.rules = append(pre.rules, nftRule{comment: "npt6 " + m.Uplink, parts: []nftPart{
			nptMatchPart{iface: m.Iface, prefix: m.Outside}, nptNATPart{to: m.Inside}}})
	}
	return []*nftChain{post, pre}
}

// icmp6TypePart matches an ICMPv6 type.
type icmp6TypePart struct{ typ uint8 }

func (p icmp6TypePart) text() string { return fmt.Sprintf("icmpv6 type %d", p.typ) }

func (p icmp6TypePart) exprs(b *exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.typ}},
	}
}

func (p icmp6TypePart) ipt(w *iptWriter, _ int) int {
	w.add("-p", "ipv6-icmp")
	return w.match("icmp6", "--icmpv6-type", fmt.Sprint(p.typ))
}

// dhcp6ClientPart matches DHCPv6 messages to the client: udp 546 from a
// link-local address.
type dhcp6ClientPart struct{}

func (dhcp6ClientPart) text() string { return "ip6 saddr fe80::/10 udp dport 546" }

func (dhcp6ClientPart) exprs(b *exprBuilder) []expr.Any {
	// As nft encodes a /10: the whole address, masked.
	mask, net := make([]byte, 16), make([]byte, 16)
	mask[0], mask[1], net[0], net[1] = 0xff, 0xc0, 0xfe, 0x80
	return append([]expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ip6SrcOff, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net},
	}, dportPart{protoUDP, []uint16{546}}.exprs(b)...)
}

func (dhcp6ClientPart) ipt(w *iptWriter, _ int) int {
	w.address(false, false, netip.MustParsePrefix("fe80::/10"))
	return dportPart{protoUDP, []uint16{546}}.ipt(w, 0)
}

// filter6Chains are the IPv6 input filter's chains, one per filtered
// uplink, jumped to from input; and the per-source meters of the limits
// (sets of IPv6 addresses).
func filter6Chains(fs []Filter6, input *nftChain) ([]*nftChain, []*nftSet) {
	var chains []*nftChain
	var sets []*nftSet
	for _, f := range fs {
		var c *nftChain
		c, sets = filterChain(f.Uplink, f.Iface, f.Filter, true, input, sets)
		chains = append(chains, c)
	}
	return chains, sets
}

// ip6Chains are table ip6 uplinkd6's chains and sets for rs.
func ip6Chains(rs Ruleset) ([]*nftChain, []*nftSet) {
	chains, sets := policy6Chains(rs)
	// The uplinks with ipv6 on are counted here for IPv6 as in table ip
	// uplinkd for IPv4 (ReadTraffic adds the two).
	var counted []countedIface
	for _, m := range rs.Marks6 {
		counted = append(counted, countedIface{m.Uplink, m.Iface})
	}
	return slices.Concat(mark6Chains(rs.Marks6, rs.LANInterface), npt6Chains(rs.NPT6), nftCountChains(counted), chains), sets
}

// npt6Text is table ip6 uplinkd6 as `nft -f` text (Plan); "" without
// IPv6 state (the table is then deleted, which Plan does not show).
func npt6Text(rs Ruleset) string {
	chains, sets := ip6Chains(rs)
	if len(chains) == 0 {
		return ""
	}
	return tableText("ip6", Table6Name, sets, chains)
}

// queueNPT6 adds to conn's batch the replacement of table ip6 uplinkd6 by
// rs's IPv6 state (its deletion when there is none). The table is small:
// it is always replaced whole.
func queueNPT6(conn *nftables.Conn, rs Ruleset) error {
	t := nftTable6
	conn.AddTable(t)
	conn.DelTable(t)
	chains, sets := ip6Chains(rs)
	if len(chains) == 0 {
		return nil
	}
	conn.AddTable(t)
	b := &exprBuilder{conn: conn, table: t, named: map[string]*nftables.Set{}}
	for _, s := range sets {
		ns := s.kernelSet(t)
		ns.ID = b.id()
		if err := conn.AddSet(ns, s.elements()); err != nil {
			return fmt.Errorf("set %s: %w", s.name, err)
		}
		b.named[s.name] = ns
	}
	kc := map[string]*nftables.Chain{}
	for _, c := range chains {
		kc[c.name] = conn.AddChain(c.kernelChain(t))
	}
	for _, c := range chains {
		c.queueRules(conn, b, kc[c.name])
	}
	return b.err
}

// verifyNPT6 reports whether table ip6 uplinkd6 holds rs's rules (by
// their comments), or is absent when there are none.
func (n *nfConn) verifyNPT6(rs Ruleset) (bool, string, error) {
	rules, err := n.nftRuleComments(unix.NFPROTO_IPV6, Table6Name)
	if err != nil {
		return false, "", err
	}
	want := map[string][]string{}
	chains, _ := ip6Chains(rs)
	for _, c := range chains {
		for _, r := range c.rules {
			want[c.name] = append(want[c.name], r.comment)
		}
	}
	if len(rules) != len(want) {
		return false, fmt.Sprintf("table ip6 %s: %d chains with rules, want %d", Table6Name, len(rules), len(want)), nil
	}
	for name, comments := range want {
		if !slices.Equal(rules[name], comments) {
			return false, "rules of chain ip6 " + name + " changed", nil
		}
	}
	return true, "", nil
}
