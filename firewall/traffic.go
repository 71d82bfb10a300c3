package firewall

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Traffic counters (issue 20). Every uplink gets counting rules in chains
// uplinkd owns, so the numbers are uplinkd's own and no administrator's rule
// or reset can skew them:
//
//   - nftables: base chains count_in (prerouting), count_out (postrouting)
//     and count_fwd (forward) in table ip uplinkd, one `iifname`/`oifname`
//     rule with a counter per uplink and direction; the same chains in
//     table ip6 uplinkd6 for the uplinks with ipv6 on (IPv6 traffic);
//   - iptables: chains UPLINKD-COUNT-IN/-OUT/-FWD in the mangle table, entered
//     from PREROUTING/POSTROUTING/FORWARD, with one target-less rule per
//     uplink and direction (a rule without a target only counts); the same
//     chains in ip6tables' mangle table for the uplinks with ipv6 on.
//
// ReadTraffic adds the IPv4 and IPv6 counts: status, metrics and the
// traffic trigger see the uplink's traffic of both families.
//
// The counters start at zero when their chain is written again: with
// nftables when the set of uplinks changes or the table is replaced after
// damage, with iptables whenever the mangle table is rewritten. Prometheus
// counters tolerate such resets; the traffic trigger treats a count that
// went backwards as "no data" for one window.

// Counter directions (the metrics' direction label).
const (
	DirIn         = "in"          // arrived on the uplink (everything: forwarded and local)
	DirOut        = "out"         // left through the uplink (everything)
	DirForwardIn  = "forward_in"  // arrived on the uplink and forwarded (to the LAN)
	DirForwardOut = "forward_out" // forwarded out through the uplink (from the LAN)
)

// Directions lists the counter directions in their display order.
var Directions = []string{DirIn, DirOut, DirForwardIn, DirForwardOut}

// Count is a packet and byte counter.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func (c Count) add(o Count) Count {
	return Count{Packets: c.Packets + o.Packets, Bytes: c.Bytes + o.Bytes}
}

// Traffic is what uplinkd counted on one uplink's interface.
type Traffic struct {
	In, Out, ForwardIn, ForwardOut Count
}

// Dir returns the count of one of Directions.
func (t Traffic) Dir(d string) Count {
	switch d {
	case DirIn:
		return t.In
	case DirOut:
		return t.Out
	case DirForwardIn:
		return t.ForwardIn
	case DirForwardOut:
		return t.ForwardOut
	}
	return Count{}
}

// TrafficReader reads the traffic counters. Both backends implement it.
type TrafficReader interface {
	// ReadTraffic returns the counters per interface (the uplinks'
	// devices) for the ifaces asked for; all of them when ifaces is empty.
	// An interface without counting rules (no Sync yet, or not an uplink)
	// is missing from the map.
	ReadTraffic(ifaces ...string) (map[string]Traffic, error)
}

// nftables chain names of the counters.
const (
	nftChainCountIn  = "count_in"
	nftChainCountOut = "count_out"
	nftChainCountFwd = "count_fwd"
)

type counterPart struct{}

func (counterPart) text() string                  { return "counter" }
func (counterPart) exprs(*exprBuilder) []expr.Any { return []expr.Any{&expr.Counter{}} }

// ipt: iptables counts every rule; one without a target only counts.
func (counterPart) ipt(*iptWriter, int) int { return 1 }

// countedIface is an uplink whose interface is counted.
type countedIface struct{ Name, Iface string }

// countedUplinks are the uplinks of rs, all counted for IPv4.
func countedUplinks(rs Ruleset) []countedIface {
	out := make([]countedIface, 0, len(rs.Uplinks))
	for _, u := range rs.Uplinks {
		out = append(out, countedIface{u.Name, u.Iface})
	}
	return out
}

// nftCountChains are the counting chains of the uplinks ups (none without
// uplinks), in table ip uplinkd for all of them and in table ip6 uplinkd6
// for the ones with ipv6 on.
func nftCountChains(ups []countedIface) []*nftChain {
	if len(ups) == 0 {
		return nil
	}
	in := &nftChain{name: nftChainCountIn, typ: nftables.ChainTypeFilter, hook: "prerouting", priority: "mangle", policy: Accept}
	out := &nftChain{name: nftChainCountOut, typ: nftables.ChainTypeFilter, hook: "postrouting", priority: "mangle", policy: Accept}
	fwd := &nftChain{name: nftChainCountFwd, typ: nftables.ChainTypeFilter, hook: "forward", priority: "mangle", policy: Accept}
	for _, u := range ups {
		in.rules = append(in.rules, r("count "+u.Name, ifnamePart{name: u.Iface}, counterPart{}))
		out.rules = append(out.rules, r("count "+u.Name, ifnamePart{out: true, name: u.Iface}, counterPart{}))
		fwd.rules = append(fwd.rules,
			r("count "+u.Name, ifnamePart{name: u.Iface}, counterPart{}),
			r("count "+u.Name, ifnamePart{out: true, name: u.Iface}, counterPart{}))
	}
	return []*nftChain{in, out, fwd}
}

// ReadTraffic reads the counters of the counting chains over the backend's
// netlink connection (three rule dumps, and three more of table ip6
// uplinkd6 while some uplink has ipv6 on): IPv4 and IPv6 added.
func (b *nftBackend) ReadTraffic(ifaces ...string) (map[string]Traffic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	out := map[string]Traffic{}
	written := func(name string) bool { return b.cur != nil && hasChain(b.cur, name) }
	if err := b.readCounts(nftTable, written, ifaces, out); err != nil {
		return nil, err
	}
	if b.last != nil && len(b.last.Marks6) > 0 {
		v6 := map[string]Traffic{}
		if err := b.readCounts(nftTable6, func(string) bool { return true }, ifaces, v6); err != nil {
			return nil, err
		}
		b.carry6.addTo(out, v6)
	}
	return out, nil
}

// dualCarry keeps the counts of an uplink with ipv6 on from going
// backwards when one family's chains alone are written again (table ip6
// uplinkd6 is replaced whole at every IPv6 change, a renumbering among
// them; ip6tables' mangle chains with every change of their text; table
// ip uplinkd after damage) while the other family's counts run on: a sum
// that drops without reaching zero would read as a reset to a Prometheus
// counter and count the whole other family again. Each family's reading
// below its last one adds the last one to a base kept per interface and
// direction. The uplinks with ipv6 off keep the plain IPv4 reading (its
// resets are whole, see above).
type dualCarry struct {
	v4, v6 monotonic
}

// addTo replaces out's counts of the interfaces v6 has by the carried
// IPv4 count plus the carried IPv6 one.
func (c *dualCarry) addTo(out, v6 map[string]Traffic) {
	for iface, cur := range v6 {
		out[iface] = c.v4.of(iface, out[iface]).add(c.v6.of(iface, cur))
	}
}

// monotonic carries one family's readings per interface.
type monotonic struct {
	last, base map[string]Traffic
}

// of is the carried count of iface for the reading cur.
func (m *monotonic) of(iface string, cur Traffic) Traffic {
	if m.last == nil {
		m.last, m.base = map[string]Traffic{}, map[string]Traffic{}
	}
	last, base := m.last[iface], m.base[iface]
	carry := func(l, b, n Count) Count {
		if n.Bytes < l.Bytes || n.Packets < l.Packets {
			return b.add(l)
		}
		return b
	}
	base = Traffic{
		In: carry(last.In, base.In, cur.In), Out: carry(last.Out, base.Out, cur.Out),
		ForwardIn:  carry(last.ForwardIn, base.ForwardIn, cur.ForwardIn),
		ForwardOut: carry(last.ForwardOut, base.ForwardOut, cur.ForwardOut),
	}
	m.last[iface], m.base[iface] = cur, base
	return base.add(cur)
}

func (t Traffic) add(o Traffic) Traffic {
	return Traffic{In: t.In.add(o.In), Out: t.Out.add(o.Out), ForwardIn: t.ForwardIn.add(o.ForwardIn), ForwardOut: t.ForwardOut.add(o.ForwardOut)}
}

// readCounts adds the counting chains of table t to out; a chain missing
// is an error only if written says it should be there.
func (b *nftBackend) readCounts(t *nftables.Table, written func(string) bool, ifaces []string, out map[string]Traffic) error {
	for _, name := range []string{nftChainCountIn, nftChainCountOut, nftChainCountFwd} {
		rules, err := b.conn.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			if !written(name) {
				continue // not written (yet): no uplinks, or no Sync
			}
			return fmt.Errorf("read traffic: chain %s of table %s: %w", name, t.Name, err)
		}
		for _, rule := range rules {
			iface, outward, c, ok := decodeCountRule(rule.Exprs)
			if !ok || (len(ifaces) > 0 && !contains(ifaces, iface)) {
				continue
			}
			t := out[iface]
			switch {
			case name == nftChainCountIn:
				t.In = t.In.add(c)
			case name == nftChainCountOut:
				t.Out = t.Out.add(c)
			case outward:
				t.ForwardOut = t.ForwardOut.add(c)
			default:
				t.ForwardIn = t.ForwardIn.add(c)
			}
			out[iface] = t
		}
	}
	return nil
}

func hasChain(p *nftProgram, name string) bool {
	for _, c := range p.chains {
		if c.name == name {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// decodeCountRule recognises the rules nftCountChains writes: meta
// iifname/oifname, cmp with the name, counter.
func decodeCountRule(ex []expr.Any) (iface string, out bool, c Count, ok bool) {
	if len(ex) != 3 {
		return "", false, Count{}, false
	}
	m, ok1 := ex[0].(*expr.Meta)
	cmp, ok2 := ex[1].(*expr.Cmp)
	cnt, ok3 := ex[2].(*expr.Counter)
	if !ok1 || !ok2 || !ok3 || (m.Key != expr.MetaKeyIIFNAME && m.Key != expr.MetaKeyOIFNAME) {
		return "", false, Count{}, false
	}
	name := string(bytes.TrimRight(cmp.Data, "\x00"))
	return name, m.Key == expr.MetaKeyOIFNAME, Count{Packets: cnt.Packets, Bytes: cnt.Bytes}, true
}

// iptables chains of the counters (mangle table).
const (
	iptCountIn  = ChainPrefix + "COUNT-IN"
	iptCountOut = ChainPrefix + "COUNT-OUT"
	iptCountFwd = ChainPrefix + "COUNT-FWD"
)

// ReadTraffic reads the counting chains with one `iptables-save -c -t
// mangle` (lines like "[12:3456] -A UPLINKD-COUNT-IN -i ppp0"): one
// process instead of one `iptables -S -v` per chain (go-iptables'
// ListWithCounters; its StructuredStats cannot parse a rule without a
// target). iptables has no cheaper way: the counters are text.
func (b *iptBackend) ReadTraffic(ifaces ...string) (map[string]Traffic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	text, err := b.exec("", b.save, "-c", "-t", "mangle")
	if err != nil {
		return nil, fmt.Errorf("read traffic: %w", err)
	}
	if _, counted := b.ip6Counts[iptCountIn]; counted && b.ip6Known {
		// The uplinks with ipv6 on are counted in ip6tables' mangle table
		// too (ip6Program): the two readings add up.
		_, _, save := b.ip6Commands()
		text6, err := b.exec("", save, "-c", "-t", "mangle")
		if err != nil {
			return nil, fmt.Errorf("read traffic: %w", err)
		}
		v6 := parseCounts(text6, ifaces)
		out := parseCounts(text, ifaces)
		b.carry6.addTo(out, v6)
		return out, nil
	}
	return parseCounts(text, ifaces), nil
}

// parseCounts reads the counting chains' lines of an `iptables-save -c`
// text (or ip6tables-save's) for ifaces (all when empty).
func parseCounts(text string, ifaces []string) map[string]Traffic {
	out := map[string]Traffic{}
	for _, line := range strings.Split(text, "\n") {
		s, chain, ok := parseCountLine(line)
		if !ok || (len(ifaces) > 0 && !contains(ifaces, s.iface)) {
			continue
		}
		t := out[s.iface]
		switch {
		case chain == iptCountIn:
			t.In = t.In.add(s.c)
		case chain == iptCountOut:
			t.Out = t.Out.add(s.c)
		case chain == iptCountFwd && s.out:
			t.ForwardOut = t.ForwardOut.add(s.c)
		case chain == iptCountFwd:
			t.ForwardIn = t.ForwardIn.add(s.c)
		default:
			continue
		}
		out[s.iface] = t
	}
	return out
}

// parseCountLine reads "[PACKETS:BYTES] -A CHAIN -i IFACE" (or -o) of
// one of the counting chains.
func parseCountLine(line string) (s iptStat, chain string, ok bool) {
	cnt, rule, found := strings.Cut(line, "] -A "+ChainPrefix+"COUNT-")
	if !found || !strings.HasPrefix(cnt, "[") {
		return s, "", false
	}
	p, by, found := strings.Cut(cnt[1:], ":")
	packets, err1 := strconv.ParseUint(p, 10, 64)
	bytes, err2 := strconv.ParseUint(by, 10, 64)
	if !found || err1 != nil || err2 != nil {
		return s, "", false
	}
	f := strings.Fields(rule)
	if len(f) != 3 || (f[1] != "-i" && f[1] != "-o") {
		return s, "", false
	}
	return iptStat{iface: f[2], out: f[1] == "-o", c: Count{Packets: packets, Bytes: bytes}}, ChainPrefix + "COUNT-" + f[0], true
}

type iptStat struct {
	iface string
	out   bool
	c     Count
}

var (
	_ TrafficReader = (*nftBackend)(nil)
	_ TrafficReader = (*iptBackend)(nil)
)
