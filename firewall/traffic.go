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

// ReadTraffic reads the counting chains with go-iptables' ListWithCounters
// (`iptables -t mangle -S CHAIN -v`, one run per chain): lines like
// "-A UPLINKD-COUNT-IN -i ppp0 -c 12 3456". go-iptables' StructuredStats
// cannot be used: its parser needs a target column, and these rules have
// none.
func (b *iptBackend) ReadTraffic(ifaces ...string) (map[string]Traffic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	out := map[string]Traffic{}
	for _, chain := range []string{iptCountIn, iptCountOut, iptCountFwd} {
		var lines []string
		err := b.run.do(func() (err error) {
			lines, err = b.ipt.ListWithCounters("mangle", chain)
			return err
		})
		if err != nil {
			if b.want == nil {
				continue // no Sync yet
			}
			return nil, fmt.Errorf("read traffic: chain %s: %w", chain, err)
		}
		for _, line := range lines {
			s, ok := parseCountLine(line)
			if !ok || (len(ifaces) > 0 && !contains(ifaces, s.iface)) {
				continue
			}
			t := out[s.iface]
			switch {
			case chain == iptCountIn:
				t.In = s.c
			case chain == iptCountOut:
				t.Out = s.c
			case s.out:
				t.ForwardOut = s.c
			default:
				t.ForwardIn = s.c
			}
			out[s.iface] = t
		}
	}
	return out, nil
}

// parseCountLine reads "-A CHAIN -i IFACE -c PACKETS BYTES" (or -o).
func parseCountLine(line string) (iptStat, bool) {
	f := strings.Fields(line)
	var s iptStat
	okIf, okC := false, false
	for i := 0; i < len(f); i++ {
		switch {
		case (f[i] == "-i" || f[i] == "-o") && i+1 < len(f):
			s.iface, s.out, okIf = f[i+1], f[i] == "-o", true
			i++
		case f[i] == "-c" && i+2 < len(f):
			p, err1 := strconv.ParseUint(f[i+1], 10, 64)
			by, err2 := strconv.ParseUint(f[i+2], 10, 64)
			s.c, okC = Count{Packets: p, Bytes: by}, err1 == nil && err2 == nil
			i += 2
		}
	}
	return s, okIf && okC
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
