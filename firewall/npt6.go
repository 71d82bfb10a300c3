package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NPTv6 of [lan.ipv6] mode npt (docs/ipv6.md): traffic leaving an uplink
// from the inside /64 has its source /64 rewritten to the uplink's LAN
// /64, and traffic arriving on the uplink for that /64 is rewritten back.
// The mapping follows the outgoing interface, so a failover needs no
// renumbering. ip6tables does it statelessly (SNPT/DNPT, RFC 6296);
// nftables with its NAT engine per connection (see nptNATPart). Both
// backends keep it apart from their
// IPv4 state (nftables: table ip6 uplinkd6; iptables: ip6tables mangle
// chains UPLINKD-NPT6-*), written only while some mapping exists, so an
// IPv4-only config renders and writes exactly what it did before.

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

// npt6Text is table ip6 uplinkd6 as `nft -f` text (Plan); "" without
// mappings (the table is then deleted, which Plan does not show).
func npt6Text(maps []NPT6) string {
	if len(maps) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table ip6 %s {}\ndelete table ip6 %s\ntable ip6 %s {\n", Table6Name, Table6Name, Table6Name)
	for _, c := range npt6Chains(maps) {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype %s hook %s priority %s; policy %s;\n", c.name, c.typ, c.hook, c.priority, c.policy)
		b.WriteString(c.rulesText())
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// queueNPT6 adds to conn's batch the replacement of table ip6 uplinkd6 by
// maps (its deletion when there are none). The table is small: it is
// always replaced whole.
func queueNPT6(conn *nftables.Conn, maps []NPT6) error {
	t := nftTable6
	conn.AddTable(t)
	conn.DelTable(t)
	if len(maps) == 0 {
		return nil
	}
	conn.AddTable(t)
	b := &exprBuilder{conn: conn, table: t, named: map[string]*nftables.Set{}}
	for _, c := range npt6Chains(maps) {
		c.queueRules(conn, b, conn.AddChain(c.kernelChain(t)))
	}
	return b.err
}

// verifyNPT6 reports whether table ip6 uplinkd6 holds the rules of maps
// (by their comments), or is absent when there are none.
func (n *nfConn) verifyNPT6(maps []NPT6) (bool, string, error) {
	rules, err := n.nftRuleComments(unix.NFPROTO_IPV6, Table6Name)
	if err != nil {
		return false, "", err
	}
	want := map[string][]string{}
	for _, c := range npt6Chains(maps) {
		if len(c.rules) == 0 {
			continue
		}
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

// ---- iptables: ip6tables SNPT/DNPT in mangle ----

// ip6tables chains of the NPTv6 rules and their jumps.
const (
	iptNPT6Post = ChainPrefix + "NPT6-POST"
	iptNPT6Pre  = ChainPrefix + "NPT6-PRE"
)

var iptNPT6Jumps = []iptJump{{"mangle", "POSTROUTING", iptNPT6Post}, {"mangle", "PREROUTING", iptNPT6Pre}}

// iptNPT6Text is the ip6tables-restore input of the NPTv6 chains: RFC 6296
// SNPT/DNPT (checksum-neutral, stateless); "" without mappings.
func iptNPT6Text(maps []NPT6) string {
	if len(maps) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*mangle\n:%s - [0:0]\n:%s - [0:0]\n", iptNPT6Post, iptNPT6Pre)
	for _, m := range maps {
		fmt.Fprintf(&b, "-A %s -o %s -s %s -m comment --comment \"npt6 %s\" -j SNPT --src-pfx %s --dst-pfx %s\n",
			iptNPT6Post, m.Iface, m.Inside, m.Uplink, m.Inside, m.Outside)
	}
	for _, m := range maps {
		fmt.Fprintf(&b, "-A %s -i %s -d %s -m comment --comment \"npt6 %s\" -j DNPT --src-pfx %s --dst-pfx %s\n",
			iptNPT6Pre, m.Iface, m.Outside, m.Uplink, m.Outside, m.Inside)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
