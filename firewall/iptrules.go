package firewall

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
)

// The iptables rendering of the rule model (buildRules, nftrules.go): each
// part writes its iptables words (ipt) next to its nft text and
// expressions, and buildIPT maps the chains of table ip uplinkd to UPLINKD-*
// chains of the mangle, nat and filter tables. What iptables forces is
// decided here or in the parts, not by building the rules again:
//
//   - No sets: a match of n prefixes, set elements or multiport groups is n
//     rules, the cross product of the parts' alternatives (rules in a row
//     with one comment, which nftables split, go element by element
//     together, as one rule's would).
//   - An "accept" is a RETURN: the packet goes on through the built-in chain
//     and the administrator's rules, as it goes on to other tables in
//     nftables. As RETURN only ends the inner chain, a chain with a drop
//     policy returns after a jump into a chain that accepts, and ends with
//     an explicit DROP (our chains have no policy of their own).
//   - A target cannot be followed by a second action: a [[rule]] sets the
//     packet mark while it is unset, and the chain ends with one save into
//     the connection mark (ruleMarkPart).
//   - Meters are hashlimit matches. The per-uplink NAT chains are inlined at
//     their jump: nftables keeps them apart so that an address change
//     rewrites one small chain, iptables-restore rewrites the whole table.
//
// The ip6tables filter chains (iptnpt6.go) are rendered from table ip6
// uplinkd6's model the same way. Its mangle chains (marks, counters, NPT)
// are still text of their own: NPT is the stateless SNPT and DNPT there
// and NAT in nftables, and that text interleaves the chains' rules.

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

func (t *iptTable) add(chain, rule string) {
	if t.rules == nil {
		t.rules = map[string][]string{}
	}
	t.rules[chain] = append(t.rules[chain], rule)
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

// iptNum is n in decimal, and iptNums the list ns, comma-separated.
func iptNum[T uint8 | uint16 | uint32](n T) string { return strconv.FormatUint(uint64(n), 10) }

func iptNums(ns []uint16) string {
	var b []byte
	for i, n := range ns {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(n), 10)
	}
	return string(b)
}

// iptMark is "value/mask" as hexMark writes them, in one allocation.
func iptMark(v, mask uint32) string {
	b := make([]byte, 0, 24)
	b = strconv.AppendUint(append(b, "0x"...), uint64(v), 16)
	return string(strconv.AppendUint(append(b, "/0x"...), uint64(mask), 16))
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

// buildIPT renders the rule model of rs (buildRules) for iptables.
func buildIPT(rs Ruleset) *iptProgram {
	m := buildRules(rs)
	mangle := &iptTable{name: "mangle"}
	nat := &iptTable{name: "nat"}
	filter := &iptTable{name: "filter"}
	p := &iptProgram{tables: map[string]*iptTable{"mangle": mangle, "nat": nat, "filter": filter}}
	// Where each chain of the model goes; a chain missing here (an
	// uplink's NAT chain) is inlined at its jump.
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
	w := newIPTWriter(m.chains, m.sets, names)
	// The chains entered from the built-in ones are always there; the
	// deny chain comes right after them, the others in the model's order
	// (the order of the text is uplinkd's own; iptables does not mind).
	for _, j := range iptJumps {
		p.tables[j.table].chain(j.target)
	}
	if w.chains[nftChainDeny] != nil {
		filter.chain(iptDeny)
	}
	for _, c := range m.chains {
		if ref, ok := names[c.name]; ok {
			ref.table.chain(ref.name)
			w.chain(c)
		}
	}
	for _, l := range w.lines {
		l.chain.table.add(l.chain.name, l.text)
	}
	return p
}

// newIPTWriter is a writer of the model's chains and sets, with the
// iptables names of the chains (names).
func newIPTWriter(chains []*nftChain, sets []*nftSet, names map[string]iptChainRef) *iptWriter {
	w := &iptWriter{names: names, chains: map[string]*nftChain{}, sets: map[string]*nftSet{}, done: map[string]bool{}}
	for _, c := range chains {
		w.chains[c.name] = c
	}
	for _, s := range sets {
		w.sets[s.name] = s
	}
	return w
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
	ipt(w *iptWriter, i int) int
}

// iptWriter writes the model's rules as iptables rule arguments. Its
// methods return 1, the alternatives of a part that writes one thing.
type iptWriter struct {
	names  map[string]iptChainRef
	chains map[string]*nftChain
	sets   map[string]*nftSet

	words   []string
	ordered [][]nftPart // a group's rules' parts in iptables' order
	// module is the match module the last words belong to: a second
	// match of it goes on without another -m (-m owner --uid-owner U
	// --gid-owner G).
	module string
	// lines are the rules written, in order; done the chains written.
	lines []iptLine
	done  map[string]bool
	// nest writes each chain right after the first jump to it (after its
	// group), unless written before: the order of the ip6tables text.
	nest bool
}

type iptLine struct {
	key   int
	chain iptChainRef
	text  string
}

// add adds words that are no match of a module (-i, -p, a target).
func (w *iptWriter) add(words ...string) int {
	w.words = append(w.words, words...)
	w.module = ""
	return 1
}

// address adds a source (destination with dst) match, negated with neg.
func (w *iptWriter) address(neg, dst bool, p netip.Prefix) int {
	if neg {
		w.add("!")
	}
	if dst {
		return w.add("-d", iptPrefix(p))
	}
	return w.add("-s", iptPrefix(p))
}

// match adds the options words of the match module.
func (w *iptWriter) match(module string, words ...string) int {
	if w.module != module {
		w.words = append(w.words, "-m", module)
	}
	w.words = append(w.words, words...)
	w.module = module
	return 1
}

func (w *iptWriter) target(words ...string) int {
	w.words = append(w.words, "-j")
	return w.add(words...)
}

// iptOrder sorts a rule's parts as uplinkd has always written iptables
// rules: -i, then -s and -d, then -o, then the rest in the parts' order.
// Most rules are in that order already and are not copied.
func iptOrder(parts []nftPart) []nftPart {
	cmp := func(a, b nftPart) int { return iptRank(a) - iptRank(b) }
	if slices.IsSortedFunc(parts, cmp) {
		return parts
	}
	parts = slices.Clone(parts)
	slices.SortStableFunc(parts, cmp)
	return parts
}

func iptRank(p nftPart) int {
	switch p := p.(type) {
	case ifnamePart:
		if p.out {
			return 2
		}
		return 0
	case addrPart:
		return 1
	case setPart:
		if !p.mac {
			return 1
		}
	}
	return 3
}

// expand renders parts[k:] once per combination of their alternatives,
// adding a rule to chain each. key numbers the combination of the
// alternatives of the parts marked shared.
func (w *iptWriter) expand(chain iptChainRef, parts []nftPart, k int, shared []bool, key int) {
	if k == len(parts) {
		w.lines = append(w.lines, iptLine{key, chain, strings.Join(w.words, " ")})
		return
	}
	words, module := len(w.words), w.module
	p := parts[k].(iptPart)
	n := p.ipt(w, 0)
	for i := range n {
		if i > 0 {
			w.words, w.module = w.words[:words], module
			p.ipt(w, i)
		}
		next := key
		if k < len(shared) && shared[k] {
			next = key*n + i
		}
		w.expand(chain, parts, k+1, shared, next)
	}
	w.words, w.module = w.words[:words], module
}

// chain writes the rules of c, and what iptables needs beyond them.
func (w *iptWriter) chain(c *nftChain) {
	if w.done[c.name] {
		return
	}
	w.done[c.name] = true
	ref := w.names[c.name]
	for i := 0; i < len(c.rules); {
		// Rules in a row with the same comment are one rule that
		// nftables splits (a [[rule]] for tcp and udp, a reject for TCP
		// and the rest). Their iptables rules go element by element of
		// the sets they share, as one rule's would.
		j := i + 1
		for j < len(c.rules) && c.rules[j].comment == c.rules[i].comment {
			j++
		}
		w.group(c, ref, c.rules[i:j])
		i = j
	}
	if c.base() && c.policy == Drop {
		// Our chains are entered from the built-in ones, whose policy
		// is the administrator's.
		w.lines = append(w.lines, iptLine{chain: ref, text: "-j DROP"})
	}
	if anyPart(c, isRuleMark) {
		w.lines = append(w.lines, iptLine{chain: ref, text: iptSaveMark})
	}
}

// iptSaveMark ends a chain with ruleMarkParts: iptables sets the [[rule]]
// mark in the packet only, and this saves it into the connection.
var iptSaveMark = strings.Join([]string{"-m", "mark", "!", "--mark", "0x0/" + hexMark(UserMarkMask),
	"-j", "CONNMARK", "--save-mark", "--nfmask", hexMark(UserMarkMask), "--ctmask", hexMark(UserMarkMask)}, " ")

// group writes rules of c that have one comment (see chain). The parts
// they all have at the same place are shared: their lines are sorted by the
// alternatives of those.
func (w *iptWriter) group(c *nftChain, ref iptChainRef, rules []nftRule) {
	ordered := w.ordered[:0]
	for _, rule := range rules {
		ordered = append(ordered, iptOrder(rule.parts))
	}
	w.ordered = ordered
	var shared []bool
	if len(ordered) > 1 {
		for k := range ordered[0] {
			same := true
			for _, parts := range ordered[1:] {
				same = same && k < len(parts) && samePart(parts[k], ordered[0][k])
			}
			shared = append(shared, same)
		}
	}
	from, nested := len(w.lines), []*nftChain{}
	for _, parts := range ordered {
		last, _ := parts[len(parts)-1].(verdictPart)
		if last.kind != expr.VerdictJump {
			w.expand(ref, parts, 0, shared, 0)
			continue
		}
		match := parts[:len(parts)-1]
		target := w.chains[last.chain]
		if _, ok := w.names[last.chain]; !ok {
			for _, t := range target.rules {
				w.expand(ref, iptOrder(slices.Concat(match, t.parts)), 0, nil, 0)
			}
			continue
		}
		w.expand(ref, parts, 0, shared, 0)
		if c.policy == Drop && anyPart(target, isAccept) {
			// nftables' accept in the target ends the packet's way
			// through the table; iptables' RETURN only ends the target,
			// and the rules after the jump must not drop the packet.
			w.expand(ref, append(slices.Clip(match), vReturn), 0, nil, 0)
		}
		if w.nest {
			nested = append(nested, target)
		}
	}
	if len(rules) > 1 {
		slices.SortStableFunc(w.lines[from:], func(a, b iptLine) int { return a.key - b.key })
	}
	for _, c := range nested {
		w.chain(c)
	}
}

func isAccept(p nftPart) bool { return p == vAccept }

func isRuleMark(p nftPart) bool {
	_, ok := p.(ruleMarkPart)
	return ok
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
