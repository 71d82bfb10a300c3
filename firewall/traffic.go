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
//     rule with a counter per uplink and direction;
//   - iptables: chains UPLINKD-COUNT-IN/-OUT/-FWD in the mangle table, entered
//     from PREROUTING/POSTROUTING/FORWARD, with one target-less rule per
//     uplink and direction (a rule without a target only counts).
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

// nftCountChains are the counting chains of rs (none without uplinks).
func nftCountChains(rs Ruleset) []*nftChain {
	if len(rs.Uplinks) == 0 {
		return nil
	}
	in := &nftChain{name: nftChainCountIn, typ: nftables.ChainTypeFilter, hook: "prerouting", priority: "mangle", policy: Accept}
	out := &nftChain{name: nftChainCountOut, typ: nftables.ChainTypeFilter, hook: "postrouting", priority: "mangle", policy: Accept}
	fwd := &nftChain{name: nftChainCountFwd, typ: nftables.ChainTypeFilter, hook: "forward", priority: "mangle", policy: Accept}
	for _, u := range rs.Uplinks {
		in.rules = append(in.rules, r("count "+u.Name, ifnamePart{name: u.Iface}, counterPart{}))
		out.rules = append(out.rules, r("count "+u.Name, ifnamePart{out: true, name: u.Iface}, counterPart{}))
		fwd.rules = append(fwd.rules,
			r("count "+u.Name, ifnamePart{name: u.Iface}, counterPart{}),
			r("count "+u.Name, ifnamePart{out: true, name: u.Iface}, counterPart{}))
	}
	return []*nftChain{in, out, fwd}
}

// ReadTraffic reads the counters of the counting chains over the backend's
// netlink connection (three rule dumps).
func (b *nftBackend) ReadTraffic(ifaces ...string) (map[string]Traffic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	out := map[string]Traffic{}
	for _, name := range []string{nftChainCountIn, nftChainCountOut, nftChainCountFwd} {
		rules, err := b.conn.GetRules(nftTable, &nftables.Chain{Name: name, Table: nftTable})
		if err != nil {
			if b.cur == nil || !hasChain(b.cur, name) {
				continue // not written (yet): no uplinks, or no Sync
			}
			return nil, fmt.Errorf("read traffic: chain %s: %w", name, err)
		}
		for _, rule := range rules {
			iface, outward, c, ok := decodeCountRule(rule.Exprs)
			if !ok || (len(ifaces) > 0 && !contains(ifaces, iface)) {
				continue
			}
			t := out[iface]
			switch {
			case name == nftChainCountIn:
				t.In = c
			case name == nftChainCountOut:
				t.Out = c
			case outward:
				t.ForwardOut = c
			default:
				t.ForwardIn = c
			}
			out[iface] = t
		}
	}
	return out, nil
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

// iptCountRules adds the counting chains' rules to mangle.
func iptCountRules(rs Ruleset, mangle *iptTable) {
	for _, u := range rs.Uplinks {
		mangle.add(iptCountIn, "-i", u.Iface)
		mangle.add(iptCountOut, "-o", u.Iface)
		mangle.add(iptCountFwd, "-i", u.Iface)
		mangle.add(iptCountFwd, "-o", u.Iface)
	}
}

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
	out := map[string]Traffic{}
	for _, line := range strings.Split(text, "\n") {
		s, chain, ok := parseCountLine(line)
		if !ok || (len(ifaces) > 0 && !contains(ifaces, s.iface)) {
			continue
		}
		t := out[s.iface]
		switch {
		case chain == iptCountIn:
			t.In = s.c
		case chain == iptCountOut:
			t.Out = s.c
		case chain == iptCountFwd && s.out:
			t.ForwardOut = s.c
		case chain == iptCountFwd:
			t.ForwardIn = s.c
		default:
			continue
		}
		out[s.iface] = t
	}
	return out, nil
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
