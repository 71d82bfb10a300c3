package firewall

import (
	"fmt"

	"github.com/google/nftables/expr"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
)

// iptables rendering of a Ruleset. The structure mirrors buildNFT rule for
// rule; the differences are forced by iptables: an "accept" is a RETURN (the
// packet goes on through the built-in chain and the administrator's rules, as
// it goes on to other tables in nftables), a target cannot be followed by a
// second action (the connection mark is saved once at the end of the mark
// chain), and there are no sets (deny entries are one rule each, in a chain
// jumped to once).

// Tables in the order they are restored: marks before NAT before filter, so
// a half-applied pass (tables commit one by one) never filters by state the
// earlier tables have not set up.
var iptTables = []string{"mangle", "nat", "filter"}

// Chain names.
const (
	iptPrerouting      = ChainPrefix + "PREROUTING"
	iptOutput          = ChainPrefix + "OUTPUT"
	iptPostrouting     = ChainPrefix + "POSTROUTING"
	iptMarkPre         = ChainPrefix + "MARK-PRE"
	iptMarkOut         = ChainPrefix + "MARK-OUT"
	iptInput           = ChainPrefix + "INPUT"
	iptForward         = ChainPrefix + "FORWARD"
	iptDeny            = ChainPrefix + "DENY"
	iptInPrefix        = ChainPrefix + "IN-"
	iptMultiportMax    = 15 // ports per -m multiport
	iptHashlimitPrefix = "ul"
)

// iptJump is one jump from a built-in chain into ours: the only rules
// uplinkd puts into chains it does not own.
type iptJump struct{ table, chain, target string }

var iptJumps = []iptJump{
	{"mangle", "PREROUTING", iptPrerouting},
	{"mangle", "OUTPUT", iptOutput},
	{"mangle", "POSTROUTING", iptPostrouting},
	{"nat", "PREROUTING", iptNATPrerouting},
	{"nat", "POSTROUTING", iptPostrouting},
	{"filter", "INPUT", iptInput},
	{"filter", "FORWARD", iptForward},
	{"mangle", "PREROUTING", iptCountIn},
	{"mangle", "POSTROUTING", iptCountOut},
	{"mangle", "FORWARD", iptCountFwd},
}

func (j iptJump) rulespec() []string { return []string{"-j", j.target} }

// iptTable is the content of our chains in one table.
type iptTable struct {
	name   string
	chains []string
	rules  map[string][]string // chain -> rule args
}

func (t *iptTable) chain(name string) {
	if !slices.Contains(t.chains, name) {
		t.chains = append(t.chains, name)
	}
}

func (t *iptTable) add(chain string, args ...string) {
	if t.rules == nil {
		t.rules = map[string][]string{}
	}
	t.rules[chain] = append(t.rules[chain], strings.Join(args, " "))
}

// text renders the table for iptables-restore --noflush. Declaring a chain
// flushes it (or creates it), and only declared chains are touched; stale
// chains are declared and then deleted with -X.
func (t *iptTable) text(stale []string) string {
	var b strings.Builder
	b.WriteString("*" + t.name + "\n")
	for _, c := range t.chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range stale {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range t.chains {
		for _, r := range t.rules[c] {
			b.WriteString("-A " + c + " " + r + "\n")
		}
	}
	for _, c := range stale {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

type iptProgram struct {
	tables map[string]*iptTable
}

func (p *iptProgram) text() string {
	var b strings.Builder
	for _, name := range iptTables {
		b.WriteString(p.tables[name].text(nil))
	}
	return b.String()
}

func iptProto(p uint8) string {
	switch p {
	case protoTCP, protoUDP, protoICMP, protoSCTP:
		return protoName(p)
	}
	return fmt.Sprint(p)
}

func iptPrefix(p netip.Prefix) string { return p.String() }

func hexMark(v uint32) string { return fmt.Sprintf("%#x", v) }

// iptPorts renders destination port matches, split into groups multiport
// accepts.
func iptPorts(proto uint8, ports []uint16) [][]string {
	if len(ports) == 1 {
		return [][]string{{"-p", iptProto(proto), "-m", iptProto(proto), "--dport", fmt.Sprint(ports[0])}}
	}
	var out [][]string
	for chunk := range slices.Chunk(ports, iptMultiportMax) {
		var s []string
		for _, p := range chunk {
			s = append(s, fmt.Sprint(p))
		}
		out = append(out, []string{"-p", iptProto(proto), "-m", "multiport", "--dports", strings.Join(s, ",")})
	}
	return out
}

// hashlimitName names a limit's per-source table (at most 15 characters).
// The parameters are part of the hash: the kernel shares a hashlimit table by
// name and keeps the first rule's parameters, so a changed limit needs a new
// name; an unchanged one keeps its table, and its buckets, across syncs.
func hashlimitName(l RateLimit) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d/%d/%d/%s", l.Name, l.Burst, l.Rate, l.Unit, l.Expire)
	return fmt.Sprintf("%s%08x", iptHashlimitPrefix, h.Sum32())
}

func oldBuildIPT(rs Ruleset) *iptProgram {
	mangle := &iptTable{name: "mangle"}
	nat := &iptTable{name: "nat"}
	filter := &iptTable{name: "filter"}
	p := &iptProgram{tables: map[string]*iptTable{"mangle": mangle, "nat": nat, "filter": filter}}
	for _, j := range iptJumps {
		p.tables[j.table].chain(j.target)
	}
	iptCountRules(rs, mangle)

	// mangle: marks.
	var marks []uint32
	var markPre, markOut [][]string
	for _, m := range rs.Marks {
		if !slices.Contains(marks, m.Mark) {
			marks = append(marks, m.Mark)
		}
		for _, args := range iptMarkRules(m) {
			if m.Prerouting {
				markPre = append(markPre, args)
			}
			if m.Output {
				markOut = append(markOut, args)
			}
		}
	}
	slices.Sort(marks)
	restore := func(chain string) {
		for _, m := range marks {
			mangle.add(chain, "-m", "conntrack", "--ctdir", "ORIGINAL",
				"-m", "mark", "--mark", "0x0/"+hexMark(UserMarkMask),
				"-m", "connmark", "--mark", hexMark(m)+"/"+hexMark(UserMarkMask),
				"-j", "MARK", "--set-xmark", hexMark(m)+"/"+hexMark(UserMarkMask))
		}
	}
	exclusions := func(chain string, pre bool) {
		for _, x := range neverMark {
			mangle.add(chain, "-d", iptPrefix(x), "-j", "RETURN")
		}
		mangle.add(chain, "-s", iptPrefix(linkLocal), "-j", "RETURN")
		mangle.add(chain, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN")
		mangle.add(chain, "-m", "addrtype", "--dst-type", "BROADCAST", "-j", "RETURN")
		if pre {
			for _, u := range rs.Uplinks {
				mangle.add(chain, "-i", u.Iface, "-j", "RETURN")
			}
		}
		mangle.add(chain, "-m", "mark", "!", "--mark", "0x0/"+hexMark(UserMarkMask), "-j", "RETURN")
	}
	save := []string{"-m", "mark", "!", "--mark", "0x0/" + hexMark(UserMarkMask),
		"-j", "CONNMARK", "--save-mark", "--nfmask", hexMark(UserMarkMask), "--ctmask", hexMark(UserMarkMask)}

	if len(markPre) > 0 {
		restore(iptPrerouting)
	}
	if len(markOut) > 0 {
		restore(iptOutput)
	}
	// Sticky balancing (see the nftables backend): restore the uplink's
	// mark on later LAN packets of its connections.
	for _, u := range rs.Uplinks {
		if u.ConnMark != 0 && rs.LANInterface != "" {
			mangle.add(iptPrerouting, "-i", rs.LANInterface, "-m", "conntrack", "--ctdir", "ORIGINAL",
				"-m", "connmark", "--mark", hexMark(u.ConnMark)+"/"+hexMark(UplinkMarkMask),
				"-j", "MARK", "--set-xmark", hexMark(u.ConnMark)+"/"+hexMark(UplinkMarkMask))
		}
	}
	// Replies from the LAN to connections that came in through an uplink
	// leave through it (see the nftables backend).
	for _, u := range rs.Uplinks {
		if u.ConnMark != 0 && rs.LANInterface != "" {
			mangle.add(iptPrerouting, "-i", rs.LANInterface, "-m", "conntrack", "--ctdir", "REPLY",
				"-m", "connmark", "--mark", hexMark(u.ConnMark)+"/"+hexMark(UplinkMarkMask),
				"-j", "MARK", "--set-xmark", hexMark(u.ConnMark)+"/"+hexMark(UplinkMarkMask))
		}
	}
	for _, u := range rs.Uplinks {
		if u.ConnMark == 0 {
			continue
		}
		set := []string{"-j", "CONNMARK", "--set-xmark", hexMark(u.ConnMark) + "/" + hexMark(UplinkMarkMask)}
		mangle.add(iptPrerouting, append([]string{"-i", u.Iface, "-m", "conntrack", "--ctstate", "NEW"}, set...)...)
		mangle.add(iptPostrouting, append([]string{"-o", u.Iface, "-m", "conntrack", "--ctstate", "NEW"}, set...)...)
	}
	// New connections enter a chain of their own: exclusions, the marks,
	// then the save into the connection mark.
	markChain := func(from, chain string, pre bool, rules [][]string) {
		if len(rules) == 0 {
			return
		}
		mangle.chain(chain)
		mangle.add(from, "-m", "conntrack", "--ctstate", "NEW", "-j", chain)
		exclusions(chain, pre)
		for _, args := range rules {
			mangle.add(chain, args...)
		}
		mangle.add(chain, save...)
	}
	markChain(iptPrerouting, iptMarkPre, true, markPre)
	markChain(iptOutput, iptMarkOut, false, markOut)

	// nat.
	for _, u := range rs.Uplinks {
		if u.NAT == NATOff || u.NAT == NATSNAT && !u.Addr.IsValid() {
			continue
		}
		for _, n := range u.NoNAT {
			nat.add(iptPostrouting, "-s", iptPrefix(n), "-o", u.Iface, "-j", "RETURN")
		}
		switch u.NAT {
		case NATSNAT:
			nat.add(iptPostrouting, "!", "-s", u.Addr.String()+"/32", "-o", u.Iface, "-j", "SNAT", "--to-source", u.Addr.String())
		case NATMasquerade:
			nat.add(iptPostrouting, "-o", u.Iface, "-j", "MASQUERADE")
		}
	}

	// filter.
	if !rs.Deny.Empty() {
		filter.chain(iptDeny)
		for _, a := range rs.Deny.DropAddrs {
			filter.add(iptDeny, "-s", iptPrefix(a), "-j", "DROP")
		}
		for _, m := range rs.Deny.DropMACs {
			filter.add(iptDeny, "-m", "mac", "--mac-source", m.String(), "-j", "DROP")
		}
		for _, a := range rs.Deny.RejectAddrs {
			filter.add(iptDeny, "-s", iptPrefix(a), "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
			filter.add(iptDeny, "-s", iptPrefix(a), "-j", "REJECT", "--reject-with", "icmp-port-unreachable")
		}
		for _, m := range rs.Deny.RejectMACs {
			filter.add(iptDeny, "-m", "mac", "--mac-source", m.String(), "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
			filter.add(iptDeny, "-m", "mac", "--mac-source", m.String(), "-j", "REJECT", "--reject-with", "icmp-port-unreachable")
		}
		filter.add(iptInput, "-j", iptDeny)
		filter.add(iptForward, "-j", iptDeny)
	}
	iptServices(rs, mangle, nat, filter)
	for _, u := range rs.Uplinks {
		if u.Filter == nil {
			continue
		}
		c := iptInPrefix + sanitize(u.Iface)
		filter.chain(c)
		filter.add(iptInput, "-i", u.Iface, "-j", c)
		if rs.InputPolicy == Drop {
			// Back from the uplink's chain means allowed.
			filter.add(iptInput, "-i", u.Iface, "-j", "RETURN")
		}
		filter.add(c, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN")
		filter.add(c, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
		for _, l := range u.Filter.Limits {
			filter.add(c, append(iptPorts(l.Proto, []uint16{l.Port})[0], iptLimitDrop(l)...)...)
		}
		for _, a := range u.Filter.Allow {
			if len(a.Ports) == 0 {
				filter.add(c, "-p", iptProto(a.Proto), "-j", "RETURN")
				continue
			}
			for _, args := range iptPorts(a.Proto, a.Ports) {
				filter.add(c, append(args, "-j", "RETURN")...)
			}
		}
		for _, t := range u.Filter.ICMPTypes {
			filter.add(c, "-p", "icmp", "-m", "icmp", "--icmp-type", fmt.Sprint(t), "-j", "RETURN")
		}
		filter.add(c, "-j", "DROP")
	}
	keep := func(chain string, extra ...[]string) {
		filter.add(chain, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN")
		for _, e := range extra {
			filter.add(chain, e...)
		}
		if rs.LANInterface != "" {
			filter.add(chain, "-i", rs.LANInterface, "-j", "RETURN")
		}
		filter.add(chain, "-j", "DROP")
	}
	if rs.InputPolicy == Drop {
		keep(iptInput, []string{"-i", "lo", "-j", "RETURN"})
	}
	if rs.ForwardPolicy == Drop {
		keep(iptForward, []string{"-m", "conntrack", "--ctstate", "DNAT", "-j", "RETURN"})
	}
	return p
}

// iptLimitDrop drops new connections of a source above the limit.
func iptLimitDrop(l RateLimit) []string {
	return slices.Concat([]string{"-m", "conntrack", "--ctstate", "NEW", "-m", "hashlimit"}, iptHashlimit(l), []string{"-j", "DROP"})
}

// iptHashlimit is the options of the hashlimit match of l: the per-source
// token bucket (the nftables meter).
func iptHashlimit(l RateLimit) []string {
	return []string{"--hashlimit-above", fmt.Sprintf("%d/%s", l.Rate, unitName(l.Unit)),
		"--hashlimit-burst", fmt.Sprint(l.Burst), "--hashlimit-mode", "srcip",
		"--hashlimit-name", hashlimitName(l),
		"--hashlimit-htable-expire", fmt.Sprint(l.Expire.Milliseconds())}
}

// iptMarkRules expands one [[rule]] into rule arguments: iptables has no
// sets, so it is the cross product of sources, destinations and port groups.
// Each rule only marks packets not marked yet, so the first [[rule]] wins as
// in nftables.
func iptMarkRules(m MarkRule) [][]string {
	srcs := [][]string{nil}
	if len(m.Sources) > 0 {
		srcs = nil
		for _, s := range m.Sources {
			srcs = append(srcs, []string{"-s", iptPrefix(s)})
		}
	}
	dsts := [][]string{nil}
	if len(m.Dests) > 0 {
		dsts = nil
		for _, d := range m.Dests {
			dsts = append(dsts, []string{"-d", iptPrefix(d)})
		}
	}
	var protos [][]string
	switch {
	case len(m.Ports) > 0:
		ps := []uint8{m.Proto}
		if m.Proto == 0 {
			ps = []uint8{protoTCP, protoUDP}
		}
		for _, p := range ps {
			protos = append(protos, iptPorts(p, m.Ports)...)
		}
	case m.Proto != 0:
		protos = [][]string{{"-p", iptProto(m.Proto)}}
	default:
		protos = [][]string{nil}
	}
	var owner []string
	if m.UID != nil || m.GID != nil {
		owner = []string{"-m", "owner"}
		if m.UID != nil {
			owner = append(owner, "--uid-owner", fmt.Sprint(*m.UID))
		}
		if m.GID != nil {
			owner = append(owner, "--gid-owner", fmt.Sprint(*m.GID))
		}
	}
	var out [][]string
	for _, s := range srcs {
		for _, d := range dsts {
			for _, p := range protos {
				var args []string
				if m.InIface != "" {
					args = append(args, "-i", m.InIface)
				}
				args = append(append(append(append(args, s...), d...), p...), owner...)
				args = append(args, "-m", "mark", "--mark", "0x0/"+hexMark(UserMarkMask),
					"-j", "MARK", "--set-xmark", hexMark(m.Mark)+"/"+hexMark(UserMarkMask))
				out = append(out, args)
			}
		}
	}
	return out
}

// buildIPT renders the rule model of rs (buildNFT) for iptables.
func buildIPT(rs Ruleset) *iptProgram {
	m := buildNFT(rs)
	mangle := &iptTable{name: "mangle", rules: map[string][]string{}}
	nat := &iptTable{name: "nat", rules: map[string][]string{}}
	filter := &iptTable{name: "filter", rules: map[string][]string{}}
	p := &iptProgram{tables: map[string]*iptTable{"mangle": mangle, "nat": nat, "filter": filter}}
	// Where each chain of the model goes. A chain missing here (an
	// uplink's NAT chain) is inlined at its jump: nftables keeps it apart
	// so that an address change rewrites only it, while iptables-restore
	// rewrites the whole nat table anyway.
	names := map[string]iptChainRef{
		"prerouting": {mangle, iptPrerouting}, "output": {mangle, iptOutput}, "postrouting": {mangle, iptPostrouting},
		nftChainMarkPre: {mangle, iptMarkPre}, nftChainMarkOut: {mangle, iptMarkOut},
		nftChainCountIn: {mangle, iptCountIn}, nftChainCountOut: {mangle, iptCountOut}, nftChainCountFwd: {mangle, iptCountFwd},
		nftChainNATPre: {nat, iptNATPrerouting}, "nat_postrouting": {nat, iptPostrouting},
		"input": {filter, iptInput}, "forward": {filter, iptForward}, nftChainDeny: {filter, iptDeny},
	}
	for _, s := range rs.Services {
		names[nftServiceChain(s)] = iptChainRef{nat, iptServiceChain(s)}
		names[nftRehashChain(s)] = iptChainRef{nat, iptRehashChain(s)}
	}
	for _, u := range rs.Uplinks {
		if u.Filter != nil {
			names[nftInChain(u.Iface)] = iptChainRef{filter, iptInPrefix + sanitize(u.Iface)}
		}
	}
	w := &iptRule{names: names, chains: map[string]*nftChain{}, sets: map[string]*nftSet{}}
	for _, s := range m.sets {
		w.sets[s.name] = s
	}
	// The chains entered from the built-in ones are always there (and
	// the deny chain comes right after them); the others in the model's
	// order.
	for _, j := range iptJumps {
		p.tables[j.table].chain(j.target)
	}
	for _, c := range m.chains {
		w.chains[c.name] = c
		if c.name == nftChainDeny {
			filter.chain(iptDeny)
		}
	}
	for _, c := range m.chains {
		if ref, ok := names[c.name]; ok {
			ref.table.chain(ref.name)
			w.chain(c, ref)
		}
	}
	return p
}

// iptChainRef is an iptables chain.
type iptChainRef struct {
	table *iptTable
	name  string
}

// iptPart is a part's iptables form: ipt writes the words of its
// alternative i to w and returns how many alternatives it has. iptables
// has no sets, so a match of n elements is n rules: a rule stands for the
// cross product of its parts' alternatives, the earlier parts outer.
type iptPart interface {
	ipt(w *iptRule, i int) int
}

// iptRule renders the model's rules as iptables rule arguments. Interface
// and address matches come first whatever the parts' order (-i, then -s
// and -d, then -o), as uplinkd has always written them; then the other
// matches and the target in the parts' order.
type iptRule struct {
	names  map[string]iptChainRef
	chains map[string]*nftChain
	sets   map[string]*nftSet

	in, addr, out, rest []string
	// module is the match module the last words of rest belong to: a
	// second match of it goes on without another -m (-m owner --uid-owner
	// U --gid-owner G).
	module string
	lines  []iptLine
}

type iptLine struct {
	key  int
	text string
}

type iptState struct {
	in, addr, out, rest int
	module              string
}

func (w *iptRule) state() iptState {
	return iptState{len(w.in), len(w.addr), len(w.out), len(w.rest), w.module}
}

func (w *iptRule) reset(s iptState) {
	w.in, w.addr, w.out, w.rest, w.module = w.in[:s.in], w.addr[:s.addr], w.out[:s.out], w.rest[:s.rest], s.module
}

// iface and address add an interface match (-o when out) and an address
// match.
func (w *iptRule) iface(out bool, name string) {
	if out {
		w.out = append(w.out, "-o", name)
	} else {
		w.in = append(w.in, "-i", name)
	}
}

func (w *iptRule) address(words ...string) { w.addr = append(w.addr, words...) }

// add adds words that are no match of a module (-p, a target).
func (w *iptRule) add(words ...string) {
	w.rest = append(w.rest, words...)
	w.module = ""
}

func (w *iptRule) match(module string, words ...string) {
	if w.module != module {
		w.rest = append(w.rest, "-m", module)
	}
	w.rest = append(w.rest, words...)
	w.module = module
}

func (w *iptRule) target(words ...string) { w.add(append([]string{"-j"}, words...)...) }

func (w *iptRule) text() string {
	var b strings.Builder
	for _, ws := range [][]string{w.in, w.addr, w.out, w.rest} {
		for _, s := range ws {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(s)
		}
	}
	return b.String()
}

// expand renders parts[k:] once per combination of their alternatives,
// adding a line per rule. key numbers the combination of the alternatives
// of the parts marked shared.
func (w *iptRule) expand(parts []nftPart, k int, shared []bool, key int) {
	if k == len(parts) {
		w.lines = append(w.lines, iptLine{key, w.text()})
		return
	}
	s := w.state()
	p := parts[k].(iptPart)
	n := p.ipt(w, 0)
	for i := range n {
		if i > 0 {
			w.reset(s)
			p.ipt(w, i)
		}
		next := key
		if k < len(shared) && shared[k] {
			next = key*n + i
		}
		w.expand(parts, k+1, shared, next)
	}
	w.reset(s)
}

// chain renders the rules of c into ref, and what iptables needs beyond
// them.
func (w *iptRule) chain(c *nftChain, ref iptChainRef) {
	for i := 0; i < len(c.rules); {
		// Rules in a row with the same comment are one rule that
		// nftables splits (a [[rule]] for tcp and udp, a reject for TCP
		// and the rest). Their iptables rules go element by element of
		// the sets they share, as one rule's would.
		j := i + 1
		for j < len(c.rules) && c.rules[j].comment == c.rules[i].comment {
			j++
		}
		w.group(c, c.rules[i:j])
		i = j
	}
	if c.base() && c.policy == Drop {
		// Our chains are entered from the built-in ones, whose policy
		// is the administrator's.
		w.lines = append(w.lines, iptLine{text: "-j DROP"})
	}
	if anyPart(c, isRuleMark) {
		w.lines = append(w.lines, iptLine{text: iptSaveMark})
	}
	for _, l := range w.lines {
		ref.table.rules[ref.name] = append(ref.table.rules[ref.name], l.text)
	}
	w.lines = w.lines[:0]
}

// iptSaveMark ends a chain with ruleMarkParts: iptables sets the [[rule]]
// mark in the packet only, and this saves it into the connection.
var iptSaveMark = strings.Join([]string{"-m", "mark", "!", "--mark", "0x0/" + hexMark(UserMarkMask),
	"-j", "CONNMARK", "--save-mark", "--nfmask", hexMark(UserMarkMask), "--ctmask", hexMark(UserMarkMask)}, " ")

func (w *iptRule) group(c *nftChain, rules []nftRule) {
	var shared []bool
	if len(rules) > 1 {
		for k := range rules[0].parts {
			same := true
			for _, rule := range rules[1:] {
				same = same && k < len(rule.parts) && samePart(rule.parts[k], rules[0].parts[k])
			}
			shared = append(shared, same)
		}
	}
	from := len(w.lines)
	for _, rule := range rules {
		parts := rule.parts
		last, _ := parts[len(parts)-1].(verdictPart)
		if last.kind != expr.VerdictJump {
			w.expand(parts, 0, shared, 0)
			continue
		}
		match := parts[:len(parts)-1]
		target := w.chains[last.chain]
		if _, ok := w.names[last.chain]; !ok {
			for _, t := range target.rules {
				w.expand(slices.Concat(match, t.parts), 0, nil, 0)
			}
			continue
		}
		w.expand(parts, 0, shared, 0)
		if c.policy == Drop && anyPart(target, isAccept) {
			// nftables' accept in the target ends the packet's way
			// through the table; iptables' RETURN only ends the target,
			// and the rules after the jump must not drop the packet.
			w.expand(append(slices.Clip(match), vReturn), 0, nil, 0)
		}
	}
	if len(rules) > 1 {
		slices.SortStableFunc(w.lines[from:], func(a, b iptLine) int { return a.key - b.key })
	}
}

// anyPart reports whether a part of a rule of c is one f looks for.
func anyPart(c *nftChain, f func(nftPart) bool) bool {
	for _, rule := range c.rules {
		if slices.ContainsFunc(rule.parts, f) {
			return true
		}
	}
	return false
}

func isAccept(p nftPart) bool { return p == nftPart(vAccept) }

func isRuleMark(p nftPart) bool {
	_, ok := p.(ruleMarkPart)
	return ok
}
