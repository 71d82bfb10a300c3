package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// This file turns a Ruleset into the rule model both backends render: the
// sets and chains of table ip uplinkd, each rule a list of parts. Every part
// renders as `nft -f` text (Plan), as the kernel expressions google/nftables
// sends (Sync), and as iptables rule words (ipt, iptrules.go, where the
// iptables differences are described). Keeping the renderings next to each
// other is what keeps them equivalent; the tests load the text with `nft -f`
// and the expressions with Sync into two namespaces and compare `nft list
// table`, and load the iptables text with iptables-restore.
//
// The model is shaped like nftables (one table, base chains with hooks,
// sets), the backend whose Sync is the incremental one: the nftables
// backend uses it as it is, with no copy or conversion on the event path.

type nftProgram struct {
	sets   []*nftSet
	chains []*nftChain
}

type nftSet struct {
	name     string
	keyType  nftables.SetDatatype
	interval bool
	// dynamic sets are meters filled from the packet path.
	dynamic bool
	timeout time.Duration
	size    uint32
	addrs   []netip.Prefix
	macs    []net.HardwareAddr
	txt     string // text, rendered once
}

type nftChain struct {
	name string
	// base chains only:
	typ      nftables.ChainType
	hook     string
	priority string // nft's symbolic name
	policy   Policy
	rules    []nftRule
	txt      string // rulesText, rendered once
}

func (c *nftChain) base() bool { return c.hook != "" }

type nftRule struct {
	parts   []nftPart
	comment string
}

// nftPart is one match or statement of a rule.
type nftPart interface {
	text() string
	exprs(b *exprBuilder) []expr.Any
}

// exprBuilder collects what rule expressions need beyond themselves: named
// sets to refer to and anonymous sets to create before the rule.
type exprBuilder struct {
	conn   *nftables.Conn
	table  *nftables.Table
	named  map[string]*nftables.Set
	nextID uint32
	err    error
}

func (b *exprBuilder) setErr(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *exprBuilder) id() uint32 {
	b.nextID++
	return b.nextID
}

// anonSet adds a constant anonymous set to the batch and returns a lookup on it.
func (b *exprBuilder) anonSet(keyType nftables.SetDatatype, interval bool, elems []nftables.SetElement, invert bool) *expr.Lookup {
	id := b.id()
	s := &nftables.Set{
		Table: b.table, ID: id, Name: "__set%d", Anonymous: true, Constant: true,
		Interval: interval, KeyType: keyType,
	}
	if err := b.conn.AddSet(s, elems); err != nil {
		b.setErr(fmt.Errorf("anonymous set: %w", err))
	}
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: id, Invert: invert}
}

func (b *exprBuilder) lookupNamed(name string) *expr.Lookup {
	s, ok := b.named[name]
	if !ok {
		b.setErr(fmt.Errorf("set %s not declared", name))
		return &expr.Lookup{SourceRegister: 1, SetName: name}
	}
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}
}

// ---- byte helpers ----

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// intervalElems encodes merged prefixes the way nft does for an interval set:
// each range is a start element and an "interval end" element one past its
// last address, plus a leading end element at 0.0.0.0 when the first range
// does not start there.
func intervalElems(ps []netip.Prefix) []nftables.SetElement {
	rs := mergedRanges(ps)
	var out []nftables.SetElement
	if len(rs) > 0 && rs[0].lo != 0 {
		out = append(out, nftables.SetElement{Key: make([]byte, 4), IntervalEnd: true})
	}
	for _, r := range rs {
		lo := u32Addr(r.lo).As4()
		out = append(out, nftables.SetElement{Key: lo[:]})
		if r.hi != ^uint32(0) {
			hi := u32Addr(r.hi + 1).As4()
			out = append(out, nftables.SetElement{Key: hi[:], IntervalEnd: true})
		}
	}
	return out
}

func prefixText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func listText(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

// ---- parts ----

type ifnamePart struct {
	out  bool
	name string
}

func (p ifnamePart) text() string {
	if p.out {
		return fmt.Sprintf("oifname %q", p.name)
	}
	return fmt.Sprintf("iifname %q", p.name)
}

func (p ifnamePart) exprs(*exprBuilder) []expr.Any {
	key := expr.MetaKeyIIFNAME
	if p.out {
		key = expr.MetaKeyOIFNAME
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(p.name)},
	}
}

func (p ifnamePart) ipt(w *iptWriter, _ int) int {
	if p.out {
		return w.add("-o", p.name)
	}
	return w.add("-i", p.name)
}

type addrPart struct {
	dst bool
	neg bool
	ps  []netip.Prefix
}

func (p addrPart) text() string {
	var items []string
	for _, x := range p.ps {
		items = append(items, prefixText(x))
	}
	s := "ip saddr "
	if p.dst {
		s = "ip daddr "
	}
	if p.neg {
		s += "!= "
	}
	return s + listText(items)
}

func (p addrPart) exprs(b *exprBuilder) []expr.Any {
	off := uint32(12)
	if p.dst {
		off = 16
	}
	op := expr.CmpOpEq
	if p.neg {
		op = expr.CmpOpNeq
	}
	if len(p.ps) > 1 {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			b.anonSet(nftables.TypeIPAddr, true, intervalElems(p.ps), p.neg),
		}
	}
	// A single prefix compares only the bytes it covers, masking the last
	// one when the length is not a multiple of 8 (what nft generates).
	x := p.ps[0]
	n := uint32((x.Bits() + 7) / 8)
	a := x.Addr().As4()
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}}
	if x.Bits()%8 != 0 {
		mask := make([]byte, n)
		for i := range mask {
			mask[i] = 0xff
		}
		mask[n-1] = byte(0xff << (8 - x.Bits()%8))
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: a[:n]})
}

// ipt is one rule per prefix (a negated match has one prefix: iptables
// cannot negate a set).
func (p addrPart) ipt(w *iptWriter, i int) int {
	w.address(p.neg, p.dst, p.ps[i])
	return len(p.ps)
}

type l4protoPart struct{ proto uint8 }

func (p l4protoPart) text() string { return "meta l4proto " + protoName(p.proto) }

func (p l4protoPart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.proto}},
	}
}

func (p l4protoPart) ipt(w *iptWriter, _ int) int { return w.add("-p", iptProto(p.proto)) }

// dportPart matches a transport protocol and destination ports.
type dportPart struct {
	proto uint8
	ports []uint16
}

func (p dportPart) text() string {
	var items []string
	for _, x := range p.ports {
		items = append(items, fmt.Sprint(x))
	}
	return protoName(p.proto) + " dport " + listText(items)
}

func (p dportPart) exprs(b *exprBuilder) []expr.Any {
	out := append(l4protoPart{p.proto}.exprs(b),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	if len(p.ports) == 1 {
		return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.ports[0])})
	}
	var elems []nftables.SetElement
	for _, x := range p.ports {
		elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(x)})
	}
	return append(out, b.anonSet(nftables.TypeInetService, false, elems, false))
}

// ipt is one rule per group of ports -m multiport takes.
func (p dportPart) ipt(w *iptWriter, i int) int {
	proto := iptProto(p.proto)
	w.add("-p", proto)
	if len(p.ports) == 1 {
		return w.match(proto, "--dport", iptNum(p.ports[0]))
	}
	w.match("multiport", "--dports", iptNums(p.ports[i*iptMultiportMax:min(len(p.ports), (i+1)*iptMultiportMax)]))
	return (len(p.ports) + iptMultiportMax - 1) / iptMultiportMax
}

// Conntrack states as the ct expression reports them (NF_CT_STATE_BIT).
const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
	ctNew         = 8
	ctStatusDNAT  = 0x20
)

type ctStatePart struct{ bits uint32 }

// ctStates are the states' names in nft's order.
var ctStates = []struct {
	bit  uint32
	name string
}{{ctInvalid, "invalid"}, {ctEstablished, "established"}, {ctRelated, "related"}, {ctNew, "new"}}

// iptCtStates are the --ctstate words of every combination of the states:
// the other way round (RELATED,ESTABLISHED) and in upper case.
var iptCtStates = func() (out [16]string) {
	for bits := range out {
		var names []string
		for _, s := range slices.Backward(ctStates) {
			if uint32(bits)&s.bit != 0 {
				names = append(names, strings.ToUpper(s.name))
			}
		}
		out[bits] = strings.Join(names, ",")
	}
	return out
}()

func (p ctStatePart) text() string {
	var names []string
	for _, s := range ctStates {
		if p.bits&s.bit != 0 {
			names = append(names, s.name)
		}
	}
	return "ct state " + strings.Join(names, ",")
}

func (p ctStatePart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(p.bits), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
	}
}

func (p ctStatePart) ipt(w *iptWriter, _ int) int {
	return w.match("conntrack", "--ctstate", iptCtStates[p.bits&15])
}

type ctOriginalPart struct{}

func (ctOriginalPart) text() string { return "ct direction original" }

func (ctOriginalPart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
	}
}

func (ctOriginalPart) ipt(w *iptWriter, _ int) int {
	return w.match("conntrack", "--ctdir", "ORIGINAL")
}

type ctDNATPart struct{}

func (ctDNATPart) text() string { return "ct status dnat" }

func (ctDNATPart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(ctStatusDNAT), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: native32(0)},
	}
}

func (ctDNATPart) ipt(w *iptWriter, _ int) int { return w.match("conntrack", "--ctstate", "DNAT") }

func markLoad(ct bool) expr.Any {
	if ct {
		return &expr.Ct{Key: expr.CtKeyMARK, Register: 1}
	}
	return &expr.Meta{Key: expr.MetaKeyMARK, Register: 1}
}

func markName(ct bool) string {
	if ct {
		return "ct mark"
	}
	return "meta mark"
}

// markCmpPart: (mark & mask) == value, or != with neg.
type markCmpPart struct {
	ct          bool
	mask, value uint32
	neg         bool
}

func (p markCmpPart) text() string {
	op := "=="
	if p.neg {
		op = "!="
	}
	return fmt.Sprintf("%s & 0x%08x %s 0x%08x", markName(p.ct), p.mask, op, p.value)
}

func (p markCmpPart) exprs(*exprBuilder) []expr.Any {
	op := expr.CmpOpEq
	if p.neg {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		markLoad(p.ct),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(p.mask), Xor: native32(0)},
		&expr.Cmp{Op: op, Register: 1, Data: native32(p.value)},
	}
}

func (p markCmpPart) ipt(w *iptWriter, _ int) int {
	module := "mark"
	if p.ct {
		module = "connmark"
	}
	if p.neg {
		return w.match(module, "!", "--mark", iptMark(p.value, p.mask))
	}
	return w.match(module, "--mark", iptMark(p.value, p.mask))
}

// markSetPart: mark = (mark & keep) | value, leaving bits other software
// uses alone (value must lie outside keep).
type markSetPart struct {
	ct          bool
	keep, value uint32
}

func (p markSetPart) text() string {
	n := markName(p.ct)
	return fmt.Sprintf("%s set %s & 0x%08x | 0x%08x", n, n, p.keep, p.value)
}

func (p markSetPart) exprs(*exprBuilder) []expr.Any {
	var set expr.Any = &expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1}
	if p.ct {
		set = &expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: 1}
	}
	return []expr.Any{
		markLoad(p.ct),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native32(p.keep), Xor: native32(p.value)},
		set,
	}
}

func (p markSetPart) ipt(w *iptWriter, _ int) int {
	if p.ct {
		return w.target("CONNMARK", "--set-xmark", iptMark(p.value, ^p.keep))
	}
	return w.target("MARK", "--set-xmark", iptMark(p.value, ^p.keep))
}

// ruleMarkPart gives a new connection the mark of a [[rule]]: the packet
// mark (for routing) and the connection mark (restored into later packets),
// then returns, so the first matching [[rule]] wins. It is one part because
// iptables cannot express it in one rule: there the packet mark is set only
// while unset, and the mark chain ends with one save into the connection
// mark (iptSaveMark).
type ruleMarkPart struct{ mark uint32 }

func (p ruleMarkPart) sets() (meta, ct markSetPart) {
	return markSetPart{keep: ^UserMarkMask, value: p.mark}, markSetPart{ct: true, keep: ^UserMarkMask, value: p.mark}
}

func (p ruleMarkPart) text() string {
	meta, ct := p.sets()
	return meta.text() + " " + ct.text() + " " + vReturn.text()
}

func (p ruleMarkPart) exprs(b *exprBuilder) []expr.Any {
	meta, ct := p.sets()
	return slices.Concat(meta.exprs(b), ct.exprs(b), vReturn.exprs(b))
}

func (p ruleMarkPart) ipt(w *iptWriter, _ int) int {
	meta, _ := p.sets()
	markCmpPart{mask: UserMarkMask}.ipt(w, 0)
	return meta.ipt(w, 0)
}

// Address types (RTN_*) the fib expression reports.
const (
	rtnLocal     = unix.RTN_LOCAL
	rtnBroadcast = unix.RTN_BROADCAST
)

type fibTypePart struct {
	typ  uint32
	name string
}

func (p fibTypePart) text() string { return "fib daddr type " + p.name }

func (p fibTypePart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagDADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(p.typ)},
	}
}

func (p fibTypePart) ipt(w *iptWriter, _ int) int {
	return w.match("addrtype", "--dst-type", strings.ToUpper(p.name))
}

type skPart struct {
	gid bool
	id  uint32
}

func (p skPart) text() string {
	if p.gid {
		return fmt.Sprintf("meta skgid %d", p.id)
	}
	return fmt.Sprintf("meta skuid %d", p.id)
}

func (p skPart) exprs(*exprBuilder) []expr.Any {
	key := expr.MetaKeySKUID
	if p.gid {
		key = expr.MetaKeySKGID
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(p.id)},
	}
}

func (p skPart) ipt(w *iptWriter, _ int) int {
	if p.gid {
		return w.match("owner", "--gid-owner", iptNum(p.id))
	}
	return w.match("owner", "--uid-owner", iptNum(p.id))
}

type icmpTypePart struct{ typ uint8 }

func (p icmpTypePart) text() string { return fmt.Sprintf("icmp type %d", p.typ) }

func (p icmpTypePart) exprs(b *exprBuilder) []expr.Any {
	return append(l4protoPart{protoICMP}.exprs(b),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.typ}})
}

func (p icmpTypePart) ipt(w *iptWriter, _ int) int {
	w.add("-p", "icmp")
	return w.match("icmp", "--icmp-type", iptNum(p.typ))
}

// setPart matches the source address or source MAC against a named set.
type setPart struct {
	mac bool
	v6  bool // the IPv6 source (table ip6 uplinkd6)
	set string
}

func (p setPart) text() string {
	switch {
	case p.mac:
		return "ether saddr @" + p.set
	case p.v6:
		return "ip6 saddr @" + p.set
	}
	return "ip saddr @" + p.set
}

func (p setPart) exprs(b *exprBuilder) []expr.Any {
	if p.mac {
		// The link-layer header is only an Ethernet header on Ethernet
		// devices; nft adds the same dependency.
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_ETHER)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
			b.lookupNamed(p.set),
		}
	}
	off, n := uint32(12), uint32(4)
	if p.v6 {
		off, n = ip6SrcOff, 16
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		b.lookupNamed(p.set),
	}
}

// ipt is one rule per element of the set.
func (p setPart) ipt(w *iptWriter, i int) int {
	s := w.sets[p.set]
	switch {
	case i < len(s.addrs):
		w.address(false, false, s.addrs[i])
	case i < len(s.addrs)+len(s.macs):
		w.match("mac", "--mac-source", s.macs[i-len(s.addrs)].String())
	}
	return len(s.addrs) + len(s.macs)
}

// meterPart charges the packet to its source's token bucket in a dynamic
// set; it matches (so the rule's verdict applies) only when the bucket is
// empty.
// meterPart is a per-source rate limit; v6 keys it by the IPv6 source
// (table ip6 uplinkd6).
type meterPart struct {
	l  RateLimit
	v6 bool
}

func unitName(u time.Duration) string {
	switch u {
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	}
	return "day"
}

func (p meterPart) text() string {
	family := "ip"
	if p.v6 {
		family = "ip6"
	}
	return fmt.Sprintf("update @%s { %s saddr limit rate over %d/%s burst %d packets }",
		p.l.Name, family, p.l.Rate, unitName(p.l.Unit), p.l.Burst)
}

func (p meterPart) exprs(b *exprBuilder) []expr.Any {
	s := b.named[p.l.Name]
	if s == nil {
		b.setErr(fmt.Errorf("meter %s not declared", p.l.Name))
		return nil
	}
	off, n := uint32(12), uint32(4)
	if p.v6 {
		off, n = ip6SrcOff, 16
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Dynset{
			SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_UPDATE,
			Exprs: []expr.Any{&expr.Limit{
				Type: expr.LimitTypePkts, Rate: p.l.Rate, Over: true,
				Unit: expr.LimitTime(p.l.Unit / time.Second), Burst: p.l.Burst,
			}},
		},
	}
}

func (p meterPart) ipt(w *iptWriter, _ int) int {
	return w.match("hashlimit", "--hashlimit-above", fmt.Sprintf("%d/%s", p.l.Rate, unitName(p.l.Unit)),
		"--hashlimit-burst", fmt.Sprint(p.l.Burst), "--hashlimit-mode", "srcip", "--hashlimit-name", hashlimitName(p.l),
		"--hashlimit-htable-expire", fmt.Sprint(p.l.Expire.Milliseconds()))
}

type verdictPart struct {
	kind  expr.VerdictKind
	chain string
}

func (p verdictPart) text() string {
	switch p.kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + p.chain
	}
	return "continue"
}

func (p verdictPart) exprs(*exprBuilder) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: p.kind, Chain: p.chain}}
}

// ipt: an accept in our chains is a RETURN (see the package doc).
func (p verdictPart) ipt(w *iptWriter, _ int) int {
	switch p.kind {
	case expr.VerdictDrop:
		return w.target("DROP")
	case expr.VerdictJump:
		return w.target(w.names[p.chain].name)
	}
	return w.target("RETURN")
}

// The verdicts are parts made once: a verdictPart put in a rule would be
// copied to the heap every time.
var (
	vAccept nftPart = verdictPart{kind: expr.VerdictAccept}
	vDrop   nftPart = verdictPart{kind: expr.VerdictDrop}
	vReturn nftPart = verdictPart{kind: expr.VerdictReturn}
)

func vJump(chain string) verdictPart { return verdictPart{kind: expr.VerdictJump, chain: chain} }

type snatPart struct{ addr netip.Addr }

func (p snatPart) text() string { return "snat to " + p.addr.String() }

func (p snatPart) exprs(*exprBuilder) []expr.Any {
	a := p.addr.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

func (p snatPart) ipt(w *iptWriter, _ int) int {
	return w.target("SNAT", "--to-source", p.addr.String())
}

type masqPart struct{}

func (masqPart) text() string                  { return "masquerade" }
func (masqPart) exprs(*exprBuilder) []expr.Any { return []expr.Any{&expr.Masq{}} }
func (masqPart) ipt(w *iptWriter, _ int) int   { return w.target("MASQUERADE") }

// iptOnly is a part that only iptables renders: nftables needs no match
// where the iptables rule has one (see where it is used).
type iptOnly struct{ p iptPart }

func (iptOnly) text() string                  { return "" }
func (iptOnly) exprs(*exprBuilder) []expr.Any { return nil }
func (p iptOnly) ipt(w *iptWriter, i int) int { return p.p.ipt(w, i) }

// rejectPart rejects with a TCP reset, or with ICMP port unreachable
// (ICMPv6 port unreachable when v6, in table ip6 uplinkd6).
type rejectPart struct{ tcpReset, v6 bool }

func (p rejectPart) text() string {
	switch {
	case p.tcpReset:
		return "reject with tcp reset"
	case p.v6:
		return "reject with icmpv6 port-unreachable"
	}
	return "reject"
}

func (p rejectPart) exprs(*exprBuilder) []expr.Any {
	switch {
	case p.tcpReset:
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
	case p.v6:
		// ICMPv6 destination unreachable, code 4 (port unreachable):
		// what nft and ip6tables' REJECT use by default.
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 4}}
	}
	// ICMP port unreachable, like iptables' REJECT default.
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3}}
}

func (p rejectPart) ipt(w *iptWriter, _ int) int {
	with := "icmp-port-unreachable"
	switch {
	case p.tcpReset:
		with = "tcp-reset"
	case p.v6:
		with = "icmp6-port-unreachable"
	}
	return w.target("REJECT", "--reject-with", with)
}

// ---- program ----

const (
	nftChainDeny    = "deny"
	nftChainMarkPre = "mark_pre"
	nftChainMarkOut = "mark_out"
)

func nftInChain(iface string) string { return "in_" + sanitize(iface) }

func nftNATChain(iface string) string { return "nat_" + sanitize(iface) }

// Sets of the deny list.
const (
	setDenyDrop      = "deny_drop"
	setDenyReject    = "deny_reject"
	setDenyMACDrop   = "deny_mac_drop"
	setDenyMACReject = "deny_mac_reject"
)

// neverMark are destinations that must never carry a [[rule]] mark:
// link-local, multicast and the limited broadcast address. Subnet-directed
// broadcasts are caught by the fib address type.
var neverMark = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("255.255.255.255/32"),
}

var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

func r(comment string, parts ...nftPart) nftRule { return nftRule{parts: parts, comment: comment} }

// buildRules builds the rule model of a Ruleset: the content of table ip
// uplinkd, which buildIPT renders for iptables too.
func buildRules(rs Ruleset) *nftProgram {
	p := &nftProgram{}

	// Deny list: sets keep the per-packet cost flat for thousands of entries.
	deny, sets := denyChain(rs.Deny.DropAddrs, rs.Deny.RejectAddrs, rs.Deny, false)
	p.sets = sets

	// Marks.
	var marks []uint32
	var markPre, markOut []nftRule
	for _, m := range rs.Marks {
		if !slices.Contains(marks, m.Mark) {
			marks = append(marks, m.Mark)
		}
		for _, rule := range nftMarkRules(m) {
			if m.Prerouting {
				markPre = append(markPre, rule)
			}
			if m.Output {
				markOut = append(markOut, rule)
			}
		}
	}
	slices.Sort(marks)
	var restore []nftRule
	for _, m := range marks {
		// Later packets of a connection (original direction only, see the
		// package doc) get the mark its first packet got.
		restore = append(restore, r(fmt.Sprintf("restore mark %#x", m),
			ctOriginalPart{},
			markCmpPart{mask: UserMarkMask, value: 0},
			markCmpPart{ct: true, mask: UserMarkMask, value: m},
			markSetPart{keep: ^UserMarkMask, value: m}))
	}
	exclusions := func(pre bool) []nftRule {
		out := []nftRule{
			r("never mark link-local, multicast, broadcast", addrPart{dst: true, ps: neverMark}, vReturn),
			r("never mark link-local", addrPart{ps: []netip.Prefix{linkLocal}}, vReturn),
			r("never mark local delivery", fibTypePart{rtnLocal, "local"}, vReturn),
			r("never mark broadcast", fibTypePart{rtnBroadcast, "broadcast"}, vReturn),
		}
		if pre {
			// Connections coming in from an uplink are never marked.
			for _, u := range rs.Uplinks {
				out = append(out, r("from uplink "+u.Name, ifnamePart{name: u.Iface}, vReturn))
			}
		}
		return append(out, r("already marked", markCmpPart{mask: UserMarkMask, neg: true}, vReturn))
	}

	pre := &nftChain{name: "prerouting", typ: nftables.ChainTypeFilter, hook: "prerouting", priority: "mangle", policy: Accept}
	out := &nftChain{name: "output", typ: nftables.ChainTypeRoute, hook: "output", priority: "mangle", policy: Accept}
	post := &nftChain{name: "postrouting", typ: nftables.ChainTypeFilter, hook: "postrouting", priority: "mangle", policy: Accept}
	nat := &nftChain{name: "nat_postrouting", typ: nftables.ChainTypeNAT, hook: "postrouting", priority: "srcnat", policy: Accept}
	input := &nftChain{name: "input", typ: nftables.ChainTypeFilter, hook: "input", priority: "filter", policy: rs.InputPolicy}
	fwd := &nftChain{name: "forward", typ: nftables.ChainTypeFilter, hook: "forward", priority: "filter", policy: rs.ForwardPolicy}

	if len(markPre) > 0 {
		pre.rules = append(pre.rules, restore...)
	}
	if len(markOut) > 0 {
		out.rules = append(out.rules, restore...)
	}
	// Sticky balancing: later LAN packets of a connection carry the mark of
	// the uplink it started on, and policy routes that mark by the uplink's
	// table, so a change of the multipath default never moves (and so breaks)
	// a NATed connection. Only LAN-originated traffic: a connection that came
	// in through an uplink must be routed to its LAN host by the main table.
	if rs.LANInterface != "" {
		for _, u := range rs.Uplinks {
			if u.ConnMark != 0 {
				pre.rules = append(pre.rules, restoreUplinkRule("sticky "+u.Name, rs.LANInterface, ctOriginalPart{}, u.ConnMark))
			}
		}
		// Replies from the LAN to a connection that came in through an
		// uplink (a [[service]], a port forward) leave through that uplink,
		// also when another one holds the default route: the sticky rule
		// routes them by the restored mark. Replies to LAN-originated
		// connections arrive on the uplink, never match, and stay unmarked.
		for _, u := range rs.Uplinks {
			if u.ConnMark != 0 {
				pre.rules = append(pre.rules, restoreUplinkRule("reply via "+u.Name, rs.LANInterface, ctReplyPart{}, u.ConnMark))
			}
		}
	}
	var natChains []*nftChain
	for _, u := range rs.Uplinks {
		if u.ConnMark != 0 {
			in, out := connMarkRules("uplink "+u.Name, u.Iface, u.ConnMark)
			pre.rules, post.rules = append(pre.rules, in), append(post.rules, out)
		}
		// One chain per NATed uplink, entered by a jump that does not
		// depend on the address: an address change rewrites only that
		// small chain.
		if u.NAT == NATOff {
			continue
		}
		nc := &nftChain{name: nftNATChain(u.Iface)}
		nat.rules = append(nat.rules, r("uplink "+u.Name, ifnamePart{out: true, name: u.Iface}, vJump(nc.name)))
		natChains = append(natChains, nc)
		if len(u.NoNAT) > 0 {
			nc.rules = append(nc.rules, r("lan not masqueraded", addrPart{ps: u.NoNAT}, vReturn))
		}
		// An snat uplink whose address uplinkd does not know (yet) is
		// masqueraded: the kernel may already route through it (a pass
		// writes its routes beside the firewall, and the address can come
		// before the pass that reads it), and a packet that left without
		// NAT would leak its LAN source and pin a conntrack entry that
		// never gets NAT. Masquerade uses the address the interface has.
		// (An interface without any IPv4 address routes nothing: the
		// kernel removes its routes with its last address, and uplinkd
		// writes none for an uplink without one.)
		switch {
		case u.NAT == NATSNAT && u.Addr.IsValid():
			nc.rules = append(nc.rules, r("snat "+u.Name,
				addrPart{neg: true, ps: []netip.Prefix{netip.PrefixFrom(u.Addr, 32)}}, snatPart{u.Addr}))
		case u.NAT == NATSNAT:
			nc.rules = append(nc.rules, r("masquerade "+u.Name+" until its address is known", masqPart{}))
		case u.NAT == NATMasquerade:
			nc.rules = append(nc.rules, r("masquerade "+u.Name, masqPart{}))
		}
	}
	var markPreChain, markOutChain *nftChain
	if len(markPre) > 0 {
		markPreChain = &nftChain{name: nftChainMarkPre, rules: append(exclusions(true), markPre...)}
		pre.rules = append(pre.rules, r("mark new connections", ctStatePart{ctNew}, vJump(nftChainMarkPre)))
	}
	if len(markOut) > 0 {
		markOutChain = &nftChain{name: nftChainMarkOut, rules: append(exclusions(false), markOut...)}
		out.rules = append(out.rules, r("mark new connections", ctStatePart{ctNew}, vJump(nftChainMarkOut)))
	}

	// Input and forward.
	if len(deny.rules) > 0 {
		input.rules = append(input.rules, r("deny list", vJump(nftChainDeny)))
		fwd.rules = append(fwd.rules, r("deny list", vJump(nftChainDeny)))
	}
	svcChains, svcSets := nftServices(rs, pre, input)
	p.sets = append(p.sets, svcSets...)
	if len(rs.HairpinSources) > 0 && rs.LANInterface != "" {
		nat.rules = append(nat.rules, r("hairpin",
			ifnamePart{out: true, name: rs.LANInterface}, addrPart{ps: rs.HairpinSources}, ctDNATPart{}, masqPart{}))
	}
	var inChains []*nftChain
	for _, u := range rs.Uplinks {
		if u.Filter == nil {
			continue
		}
		var c *nftChain
		c, p.sets = filterChain(u.Name, u.Iface, u.Filter, false, input, p.sets)
		inChains = append(inChains, c)
	}
	if rs.InputPolicy == Drop {
		keepRules(input, rs.LANInterface, r("loopback", ifnamePart{name: "lo"}, vAccept))
	}
	if rs.ForwardPolicy == Drop {
		keepRules(fwd, rs.LANInterface, r("port forwards", ctDNATPart{}, vAccept))
	}

	for _, c := range []*nftChain{pre, markPreChain, out, markOutChain, post, nat, input, fwd} {
		if c != nil && (len(c.rules) > 0 || c.policy == Drop) {
			p.chains = append(p.chains, c)
		}
	}
	p.chains = append(p.chains, nftCountChains(countedUplinks(rs))...)
	p.chains = append(p.chains, natChains...)
	p.chains = append(p.chains, svcChains...)
	p.chains = append(p.chains, inChains...)
	if len(deny.rules) > 0 {
		p.chains = append(p.chains, deny)
	}
	return p
}

// restoreUplinkRule restores an uplink's connection mark into the packet
// mark of the LAN packets of its connections in one direction (dir).
func restoreUplinkRule(comment, lan string, dir nftPart, mark uint32) nftRule {
	return r(comment, ifnamePart{name: lan}, dir,
		markCmpPart{ct: true, mask: UplinkMarkMask, value: mark}, markSetPart{keep: ^UplinkMarkMask, value: mark})
}

// connMarkRules give the new connections arriving (in) and leaving (out)
// through an uplink its connection mark.
func connMarkRules(comment, iface string, mark uint32) (in, out nftRule) {
	set := markSetPart{ct: true, keep: ^UplinkMarkMask, value: mark}
	return r(comment, ctStatePart{ctNew}, ifnamePart{name: iface}, set),
		r(comment, ctStatePart{ctNew}, ifnamePart{out: true, name: iface}, set)
}

// keepRules are what a chain with a drop policy keeps open: established
// and related traffic, extra, and what comes from the LAN interface.
func keepRules(c *nftChain, lan string, extra ...nftRule) {
	c.rules = append(c.rules, r("established", ctStatePart{ctEstablished | ctRelated}, vAccept))
	c.rules = append(c.rules, extra...)
	if lan != "" {
		c.rules = append(c.rules, r("lan", ifnamePart{name: lan}, vAccept))
	}
}

// denyChain is the deny list's chain and sets: the sources drop and
// reject (IPv6 ones with v6, in table ip6 uplinkd6) and d's MACs.
func denyChain(drop, reject []netip.Prefix, d Deny, v6 bool) (*nftChain, []*nftSet) {
	keyType := nftables.TypeIPAddr
	if v6 {
		keyType = nftables.TypeIP6Addr
	}
	c := &nftChain{name: nftChainDeny}
	var sets []*nftSet
	if len(drop) > 0 {
		sets = append(sets, &nftSet{name: setDenyDrop, keyType: keyType, interval: true, addrs: drop})
		c.rules = append(c.rules, r("deny drop", setPart{v6: v6, set: setDenyDrop}, vDrop))
	}
	if len(d.DropMACs) > 0 {
		sets = append(sets, &nftSet{name: setDenyMACDrop, keyType: nftables.TypeEtherAddr, macs: d.DropMACs})
		c.rules = append(c.rules, r("deny mac drop", setPart{mac: true, set: setDenyMACDrop}, vDrop))
	}
	if len(reject) > 0 {
		sets = append(sets, &nftSet{name: setDenyReject, keyType: keyType, interval: true, addrs: reject})
		c.rules = append(c.rules,
			r("deny reject", setPart{v6: v6, set: setDenyReject}, l4protoPart{protoTCP}, rejectPart{tcpReset: true}),
			r("deny reject", setPart{v6: v6, set: setDenyReject}, rejectPart{v6: v6}))
	}
	if len(d.RejectMACs) > 0 {
		sets = append(sets, &nftSet{name: setDenyMACReject, keyType: nftables.TypeEtherAddr, macs: d.RejectMACs})
		c.rules = append(c.rules,
			r("deny mac reject", setPart{mac: true, set: setDenyMACReject}, l4protoPart{protoTCP}, rejectPart{tcpReset: true}),
			r("deny mac reject", setPart{mac: true, set: setDenyMACReject}, rejectPart{v6: v6}))
	}
	return c, sets
}

// filterChain is the input filter chain of an uplink, jumped to from
// input, with the meters of its limits added to sets. With v6 it is the
// IPv6 one (table ip6 uplinkd6), which first lets in what IPv6 needs to
// work (see npt6.go); the IPv4 one allows the configured ICMP types last.
func filterChain(uplink, iface string, f *InputFilter, v6 bool, input *nftChain, sets []*nftSet) (*nftChain, []*nftSet) {
	c := &nftChain{name: nftInChain(iface)}
	c.rules = append(c.rules,
		r("established", ctStatePart{ctEstablished | ctRelated}, vAccept),
		r("invalid", ctStatePart{ctInvalid}, vDrop))
	keyType := nftables.TypeIPAddr
	if v6 {
		keyType = nftables.TypeIP6Addr
		c.rules = append(append(c.rules, icmp6Rules(icmp6Kept(f))...), r("dhcpv6 client", dhcp6ClientPart{}, vAccept))
	}
	for _, l := range f.Limits {
		sets = append(sets, &nftSet{name: l.Name, keyType: keyType, dynamic: true, timeout: l.Expire, size: 65535})
		c.rules = append(c.rules, r(fmt.Sprintf("limit %s/%d", protoName(l.Proto), l.Port),
			dportPart{l.Proto, []uint16{l.Port}}, ctStatePart{ctNew}, meterPart{l: l, v6: v6}, vDrop))
	}
	for _, a := range f.Allow {
		if len(a.Ports) > 0 {
			c.rules = append(c.rules, r("allow", dportPart{a.Proto, a.Ports}, vAccept))
		} else {
			c.rules = append(c.rules, r("allow", l4protoPart{a.Proto}, vAccept))
		}
	}
	if !v6 {
		for _, t := range f.ICMPTypes {
			c.rules = append(c.rules, r("allow icmp", icmpTypePart{t}, vAccept))
		}
	}
	c.rules = append(c.rules, r("not allowed on "+uplink, vDrop))
	input.rules = append(input.rules, r("uplink "+uplink, ifnamePart{name: iface}, vJump(c.name)))
	return c, sets
}

// nftMarkRules expands one [[rule]] into nft rules: one per protocol when
// ports are given without a protocol (tcp and udp).
func nftMarkRules(m MarkRule) []nftRule {
	protos := []uint8{m.Proto}
	if m.Proto == 0 && len(m.Ports) > 0 {
		protos = []uint8{protoTCP, protoUDP}
	}
	var out []nftRule
	for _, proto := range protos {
		var parts []nftPart
		if m.InIface != "" {
			parts = append(parts, ifnamePart{name: m.InIface})
		}
		if len(m.Sources) > 0 {
			parts = append(parts, addrPart{ps: m.Sources})
		}
		if len(m.Dests) > 0 {
			parts = append(parts, addrPart{dst: true, ps: m.Dests})
		}
		switch {
		case len(m.Ports) > 0:
			parts = append(parts, dportPart{proto, m.Ports})
		case proto != 0:
			parts = append(parts, l4protoPart{proto})
		}
		if m.UID != nil {
			parts = append(parts, skPart{id: *m.UID})
		}
		if m.GID != nil {
			parts = append(parts, skPart{gid: true, id: *m.GID})
		}
		parts = append(parts, ruleMarkPart{m.Mark})
		out = append(out, r("rule "+m.Name, parts...))
	}
	return out
}

// ---- text ----

func (p *nftProgram) text() string { return tableText("ip", TableName, p.sets, p.chains) }

// tableText is one owned table as `nft -f` text that replaces it whole.
// Declaring the table first makes the delete valid when it does not exist
// yet; the three statements are one transaction under `nft -f`.
func tableText(family, name string, sets []*nftSet, chains []*nftChain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %[1]s %[2]s {}\ndelete table %[1]s %[2]s\ntable %[1]s %[2]s {\n", family, name)
	for _, s := range sets {
		b.WriteString(s.text())
	}
	for _, c := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.name)
		if c.base() {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %s; policy %s;\n", c.typ, c.hook, c.priority, c.policy)
		}
		b.WriteString(c.rulesText())
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func (rule nftRule) text() string {
	var parts []string
	for _, p := range rule.parts {
		if t := p.text(); t != "" { // an iptOnly part
			parts = append(parts, t)
		}
	}
	s := strings.Join(parts, " ")
	if rule.comment != "" {
		s += fmt.Sprintf(" comment %q", rule.comment)
	}
	return s
}

func (s *nftSet) writeText(b *strings.Builder) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.name, s.keyType.Name)
	if s.size > 0 {
		fmt.Fprintf(b, "\t\tsize %d\n", s.size)
	}
	var flags []string
	if s.interval {
		flags = append(flags, "interval")
	}
	if s.dynamic {
		flags = append(flags, "dynamic", "timeout")
	}
	if len(flags) > 0 {
		fmt.Fprintf(b, "\t\tflags %s\n", strings.Join(flags, ","))
	}
	if s.timeout > 0 {
		fmt.Fprintf(b, "\t\ttimeout %ds\n", int64(s.timeout/time.Second))
	}
	var elems []string
	for _, p := range s.addrs {
		elems = append(elems, prefixText(p))
	}
	for _, m := range s.macs {
		elems = append(elems, m.String())
	}
	if len(elems) > 0 {
		b.WriteString("\t\telements = {")
		for i, e := range elems {
			if i%8 == 0 {
				b.WriteString("\n\t\t\t")
			} else {
				b.WriteString(" ")
			}
			b.WriteString(e)
			if i < len(elems)-1 {
				b.WriteString(",")
			}
		}
		b.WriteString("\n\t\t}\n")
	}
	b.WriteString("\t}\n")
}

// ---- kernel ----

var nftHooks = map[string]*nftables.ChainHook{
	"prerouting": nftables.ChainHookPrerouting, "input": nftables.ChainHookInput,
	"forward": nftables.ChainHookForward, "output": nftables.ChainHookOutput,
	"postrouting": nftables.ChainHookPostrouting,
}

var nftPriorities = map[string]*nftables.ChainPriority{
	"mangle": nftables.ChainPriorityMangle, "filter": nftables.ChainPriorityFilter,
	"srcnat": nftables.ChainPriorityNATSource, "dstnat": nftables.ChainPriorityNATDest,
}

func (s *nftSet) kernelSet(t *nftables.Table) *nftables.Set {
	ns := &nftables.Set{Table: t, Name: s.name, KeyType: s.keyType, Interval: s.interval}
	if s.dynamic {
		ns.Dynamic, ns.HasTimeout, ns.Timeout, ns.Size = true, true, s.timeout, s.size
	}
	return ns
}

func (s *nftSet) elements() []nftables.SetElement {
	var elems []nftables.SetElement
	switch {
	case len(s.addrs) > 0 && s.keyType == nftables.TypeIP6Addr:
		elems = intervalElems6(s.addrs)
	case len(s.addrs) > 0:
		elems = intervalElems(s.addrs)
	}
	for _, m := range s.macs {
		elems = append(elems, nftables.SetElement{Key: slices.Clone([]byte(m))})
	}
	return elems
}

func (s *nftSet) sameElements(o *nftSet) bool {
	return slices.Equal(s.addrs, o.addrs) &&
		slices.EqualFunc(s.macs, o.macs, func(a, b net.HardwareAddr) bool { return string(a) == string(b) })
}

// elementCount is len(s.elements()) without building them.
func (s *nftSet) elementCount() int {
	if len(s.addrs) == 0 {
		return len(s.macs)
	}
	if s.keyType == nftables.TypeIP6Addr {
		return len(intervalElems6(s.addrs)) + len(s.macs)
	}
	rs := mergedRanges(s.addrs)
	n := 2 * len(rs)
	if rs[0].lo != 0 {
		n++
	}
	if rs[len(rs)-1].hi == ^uint32(0) {
		n--
	}
	return n + len(s.macs)
}

// definition is the set without its elements.
func (s *nftSet) definition() string {
	return fmt.Sprintf("%s %s %v %v %s %d", s.name, s.keyType.Name, s.interval, s.dynamic, s.timeout, s.size)
}

func (s *nftSet) text() string {
	if s.txt == "" {
		var b strings.Builder
		s.writeText(&b)
		s.txt = b.String()
	}
	return s.txt
}

func (c *nftChain) kernelChain(t *nftables.Table) *nftables.Chain {
	nc := &nftables.Chain{Name: c.name, Table: t}
	if c.base() {
		pol := nftables.ChainPolicyAccept
		if c.policy == Drop {
			pol = nftables.ChainPolicyDrop
		}
		nc.Type, nc.Hooknum, nc.Priority, nc.Policy = c.typ, nftHooks[c.hook], nftPriorities[c.priority], &pol
	}
	return nc
}

// sameHeader reports whether c and o are the same chain with the same
// hook, priority and policy.
func (c *nftChain) sameHeader(o *nftChain) bool {
	return c.name == o.name && c.typ == o.typ && c.hook == o.hook && c.priority == o.priority && c.policy == o.policy
}

// sameRules reports whether c and o hold the same rules. It compares the
// rules' parts instead of their text: rendering every chain of the new
// program on each Sync was most of an address change's userland cost. Equal
// parts render equal text; parts that differ but would render the same only
// cost a needless refill.
func (c *nftChain) sameRules(o *nftChain) bool {
	if c.txt != "" && o.txt != "" {
		return c.txt == o.txt
	}
	if len(c.rules) != len(o.rules) {
		return false
	}
	for i := range c.rules {
		a, b := c.rules[i], o.rules[i]
		if a.comment != b.comment || len(a.parts) != len(b.parts) {
			return false
		}
		for j := range a.parts {
			if !samePart(a.parts[j], b.parts[j]) {
				return false
			}
		}
	}
	return true
}

// samePart compares two parts: with == when their type is plain data
// (most parts are a few scalars), else deeply.
func samePart(a, b nftPart) bool {
	t := reflect.TypeOf(a)
	if t != reflect.TypeOf(b) {
		return false
	}
	if t != nil && plainType(t) {
		return a == b
	}
	return reflect.DeepEqual(a, b)
}

// plainTypes caches plainType per part type.
var plainTypes sync.Map // reflect.Type → bool

// plainType reports whether == on values of t compares their contents and
// cannot panic: comparable, and no interface (whose dynamic value may not
// be comparable) or pointer (compared by identity) anywhere inside.
func plainType(t reflect.Type) bool {
	if v, ok := plainTypes.Load(t); ok {
		return v.(bool)
	}
	var plain func(t reflect.Type) bool
	plain = func(t reflect.Type) bool {
		switch t.Kind() {
		case reflect.Interface, reflect.Pointer, reflect.UnsafePointer, reflect.Chan:
			return false
		case reflect.Struct:
			for i := range t.NumField() {
				if !plain(t.Field(i).Type) {
					return false
				}
			}
			return true
		case reflect.Array:
			return plain(t.Elem())
		}
		return t.Comparable()
	}
	ok := plain(t)
	plainTypes.Store(t, ok)
	return ok
}

func (c *nftChain) rulesText() string {
	if c.txt == "" && len(c.rules) > 0 {
		var b strings.Builder
		for _, rule := range c.rules {
			b.WriteString("\t\t" + rule.text() + "\n")
		}
		c.txt = b.String()
	}
	return c.txt
}

func (c *nftChain) queueRules(conn *nftables.Conn, b *exprBuilder, kc *nftables.Chain) {
	for _, rule := range c.rules {
		var ex []expr.Any
		for _, part := range rule.parts {
			ex = append(ex, part.exprs(b)...)
		}
		nr := &nftables.Rule{Table: b.table, Chain: kc, Exprs: ex}
		if rule.comment != "" {
			nr.UserData = userdata.AppendString(nil, userdata.TypeComment, rule.comment)
		}
		conn.AddRule(nr)
	}
}

// queue adds the whole table, replacing the old one, to conn's batch. This
// is the path for the first Sync and after damage: it re-registers the base
// chains' hooks and resets the meters, which costs milliseconds.
func (p *nftProgram) queue(conn *nftables.Conn) error {
	t := nftTable
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	b := &exprBuilder{conn: conn, table: t, named: map[string]*nftables.Set{}}
	for _, s := range p.sets {
		ns := s.kernelSet(t)
		ns.ID = b.id()
		if err := conn.AddSet(ns, s.elements()); err != nil {
			return fmt.Errorf("set %s: %w", s.name, err)
		}
		b.named[s.name] = ns
	}
	chains := map[string]*nftables.Chain{}
	for _, c := range p.chains {
		chains[c.name] = conn.AddChain(c.kernelChain(t))
	}
	for _, c := range p.chains {
		c.queueRules(conn, b, chains[c.name])
	}
	return b.err
}

// queueDiff adds to conn's batch what turns old (the table as the last Sync
// left it) into p, touching only what differs: the chains whose rules
// changed are flushed and refilled, chains and sets that stay are kept, so
// an address change rewrites one NAT chain (about 0.1 ms) and the rate-limit
// meters keep their state. ok is false when the difference involves a set
// definition; the caller then replaces the table.
func (p *nftProgram) queueDiff(conn *nftables.Conn, old *nftProgram) (ok bool, err error) {
	t := nftTable
	oldSets := map[string]*nftSet{}
	for _, s := range old.sets {
		oldSets[s.name] = s
	}
	if len(old.sets) != len(p.sets) {
		return false, nil
	}
	b := &exprBuilder{conn: conn, table: t, named: map[string]*nftables.Set{}}
	var refill []*nftSet
	for _, s := range p.sets {
		o := oldSets[s.name]
		if o == nil || o.definition() != s.definition() {
			return false, nil
		}
		b.named[s.name] = s.kernelSet(t) // ID 0: referred to by name
		if !s.dynamic && !s.sameElements(o) {
			refill = append(refill, s)
		}
	}
	oldChains := map[string]*nftChain{}
	for _, c := range old.chains {
		oldChains[c.name] = c
	}
	// Hooks cannot change in place; check before queueing anything.
	for _, c := range p.chains {
		if o := oldChains[c.name]; o != nil && (o.typ != c.typ || o.hook != c.hook || o.priority != c.priority) {
			return false, nil
		}
	}
	newChains := map[string]bool{}
	var fill []*nftChain
	for _, c := range p.chains {
		newChains[c.name] = true
		o := oldChains[c.name]
		switch {
		case o == nil:
			conn.AddChain(c.kernelChain(t))
			fill = append(fill, c)
			continue
		case !o.sameHeader(c):
			conn.AddChain(c.kernelChain(t)) // updates the policy
		}
		if !o.sameRules(c) {
			conn.FlushChain(c.kernelChain(t))
			fill = append(fill, c)
		}
	}
	var gone []*nftChain
	for _, o := range old.chains {
		if !newChains[o.name] {
			conn.FlushChain(o.kernelChain(t))
			gone = append(gone, o)
		}
	}
	for _, s := range refill {
		ks := b.named[s.name]
		conn.FlushSet(ks)
		if elems := s.elements(); len(elems) > 0 {
			if err := conn.SetAddElements(ks, elems); err != nil {
				return true, fmt.Errorf("set %s: %w", s.name, err)
			}
		}
	}
	// Deleted last: the jumps into them went with the flushes above.
	for _, o := range gone {
		conn.DelChain(o.kernelChain(t))
	}
	for _, c := range fill {
		c.queueRules(conn, b, c.kernelChain(t))
	}
	return true, b.err
}

// signature is what Check compares with the kernel: chains (with hook and
// policy) and the comment of every rule in order, and the sets with their
// element counts.
type nftSignature struct {
	chains map[string]chainSig
	sets   map[string]int
}

type chainSig struct {
	hook     uint32
	base     bool
	policy   uint32
	comments []string
}

func (p *nftProgram) signature() nftSignature {
	sig := nftSignature{chains: map[string]chainSig{}, sets: map[string]int{}}
	for _, c := range p.chains {
		cs := chainSig{base: c.base()}
		if c.base() {
			cs.hook = uint32(*nftHooks[c.hook])
			cs.policy = uint32(nftables.ChainPolicyAccept)
			if c.policy == Drop {
				cs.policy = uint32(nftables.ChainPolicyDrop)
			}
		}
		for _, rule := range c.rules {
			cs.comments = append(cs.comments, rule.comment)
		}
		sig.chains[c.name] = cs
	}
	for _, s := range p.sets {
		if s.dynamic {
			sig.sets[s.name] = -1 // filled from the packet path
			continue
		}
		sig.sets[s.name] = s.elementCount()
	}
	return sig
}
