package firewall

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// Names and mark layout shared by both backends.
const (
	// TableName is the nftables table (family ip) uplinkd owns.
	TableName = "uplinkd"
	// ChainPrefix starts the name of every iptables chain uplinkd owns.
	ChainPrefix = "UPLINKD-"

	// UserMarkMask holds the [[rule]] mark; policy emits `fwmark M/0xffff`.
	UserMarkMask uint32 = policy.UserMarkMask
	// UplinkMarkMask holds the uplink a connection belongs to: in the
	// conntrack mark, and restored into the packet mark of later LAN packets.
	UplinkMarkMask uint32 = policy.UplinkMarkMask
	// MaxUplinkMarks is how many uplinks fit in UplinkMarkMask (value 0 means
	// "no uplink").
	MaxUplinkMarks = policy.MaxUplinks
)

// UplinkMark is the conntrack mark value of the uplink at index i of
// Config.Uplinks (use with UplinkMarkMask), or 0 when i is out of range.
func UplinkMark(i int) uint32 { return policy.UplinkMark(i) }

// Input is what the firewall needs from one reconcile pass.
type Input struct {
	Config *policy.Config
	// Uplinks is policy's verdict per uplink. Only Name, Iface and Addr are
	// used: Addr invalid means "no address". Usable is deliberately ignored,
	// so a failing uplink does not churn the firewall; dropping its
	// connections is DeleteConntrackByMark's job.
	Uplinks []policy.UplinkState
}

// Policy is the verdict for packets no rule decided on.
type Policy string

// Policies.
const (
	Accept Policy = "accept"
	Drop   Policy = "drop"
)

// NATMode is how traffic leaving an uplink is source-NATed.
type NATMode string

// NAT modes ([[uplink]] snat).
const (
	NATOff        NATMode = "off"
	NATSNAT       NATMode = "snat"
	NATMasquerade NATMode = "masquerade"
)

// Ruleset is the backend-neutral netfilter state uplinkd wants. It is a pure
// value: two equal configurations and observations give equal Rulesets, and
// both backends render it deterministically.
type Ruleset struct {
	// InputPolicy and ForwardPolicy decide packets nothing else decided.
	// Drop keeps loopback, the LAN interface and established/related traffic
	// (and DNATed traffic in forward) working, so the gateway keeps serving
	// its LAN (DHCP, DNS, ssh).
	InputPolicy   Policy
	ForwardPolicy Policy
	LANInterface  string

	Uplinks []UplinkRules
	Marks   []MarkRule
	Deny    Deny

	// Warnings lists what Compute skipped (invalid or unsupported values);
	// the caller logs them. They are not part of the kernel state.
	Warnings []string
}

// UplinkRules is everything that is per uplink.
type UplinkRules struct {
	Name  string
	Iface string
	// ConnMark is UplinkMark(index), 0 when there are too many uplinks.
	ConnMark uint32
	// NAT is the configured mode. With NATSNAT there is a rule only while
	// Addr is valid: without an address there is nothing to NAT to (and
	// nothing is routed out of the uplink's own address).
	NAT  NATMode
	Addr netip.Addr
	// NoNAT are source prefixes excluded from NAT on this uplink (the LAN
	// networks when [lan] masquerade = false).
	NoNAT []netip.Prefix
	// Filter is the input filter; nil means the uplink is not filtered.
	Filter *InputFilter
}

// InputFilter is what may enter through one uplink ([uplink.firewall]).
type InputFilter struct {
	Allow     []Allow
	Limits    []RateLimit
	ICMPTypes []uint8
}

// Allow opens destination ports of one protocol (all of it when Ports is empty).
type Allow struct {
	Proto uint8
	Ports []uint16
}

// RateLimit drops new connections from one source address above Burst per
// Period. It is a per-source token bucket holding Burst tokens that refills
// one token per Period: the first Burst new connections pass, and within any
// window shorter than Period no more than Burst pass, so with
// {hits=3, seconds=60} the 4th new connection within a minute is dropped.
// (-m recent's sliding window lets a full new burst through one Period after
// the last one; the bucket lets one through per Period, which is stricter and
// has the same guarantee.) Period is Seconds rounded up to a value that both
// nftables and iptables hashlimit can express as Rate/Unit (a divisor of a
// day), which only ever makes the limit stricter.
type RateLimit struct {
	Proto  uint8
	Port   uint16
	Burst  uint32
	Rate   uint64 // per Unit; Unit/Rate == Period
	Unit   time.Duration
	Period time.Duration
	// Expire is how long a source's bucket is kept after its last new
	// connection: Burst*Period, the time to refill, so forgetting a source is
	// indistinguishable from keeping it.
	Expire time.Duration
	// Name identifies the per-source table (nftables set, hashlimit name).
	Name string
}

// MarkRule is one [[rule]]: new connections matching it get Mark.
type MarkRule struct {
	Name string
	Mark uint32
	// Prerouting: applies to forwarded traffic (and traffic to other hosts
	// arriving from the LAN). Output: applies to locally generated traffic.
	Prerouting bool
	Output     bool
	UID        *uint32
	GID        *uint32
	Sources    []netip.Prefix
	Dests      []netip.Prefix
	Proto      uint8 // 0: any
	Ports      []uint16
	InIface    string
}

// Deny is the [[firewall.deny]] list, applied to input and forward before
// anything else. Overlapping prefixes are merged; when an address is both in
// a drop and a reject entry, drop wins.
type Deny struct {
	DropAddrs   []netip.Prefix
	RejectAddrs []netip.Prefix
	DropMACs    []net.HardwareAddr
	RejectMACs  []net.HardwareAddr
}

// Empty reports whether there is nothing to deny.
func (d Deny) Empty() bool {
	return len(d.DropAddrs)+len(d.RejectAddrs)+len(d.DropMACs)+len(d.RejectMACs) == 0
}

// Protocol numbers uplinkd renders by name.
const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

var protoNames = map[string]uint8{
	"icmp": protoICMP, "tcp": protoTCP, "udp": protoUDP, "gre": 47,
	"esp": 50, "ah": 51, "sctp": protoSCTP, "udplite": 136,
}

func protoNumber(s string) (uint8, bool) {
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint8(n), true
}

func protoName(p uint8) string {
	for n, v := range protoNames {
		if v == p {
			return n
		}
	}
	return strconv.Itoa(int(p))
}

func hasPorts(p uint8) bool { return p == protoTCP || p == protoUDP || p == protoSCTP }

// Compute derives the desired netfilter state. It is pure: [[rule]] user
// names are not resolved here (that reads /etc/passwd); a rule with `user`
// but no `uid` is skipped with a warning unless the caller resolved it first
// (see ResolveUsers).
func Compute(in Input) Ruleset {
	cfg := in.Config
	if cfg == nil {
		cfg = &policy.Config{}
	}
	var rs Ruleset
	warn := func(format string, a ...any) { rs.Warnings = append(rs.Warnings, fmt.Sprintf(format, a...)) }

	rs.InputPolicy = computePolicy(cfg.Firewall.InputPolicy, "input_policy", warn)
	rs.ForwardPolicy = computePolicy(cfg.Firewall.ForwardPolicy, "forward_policy", warn)
	rs.LANInterface = cfg.LAN.Interface

	state := map[string]policy.UplinkState{}
	for _, u := range in.Uplinks {
		state[u.Name] = u
	}

	// [lan] masquerade defaults to true when there is a LAN. Every uplink's
	// NAT rule covers all traffic leaving it that is not already from its
	// own address: that NATs the LAN out of every uplink and also local
	// traffic that a mark re-routed after the source address was chosen.
	// masquerade = false therefore has to exclude the LAN networks.
	var noNAT []netip.Prefix
	if !policy.Bool(cfg.LAN.Masquerade, cfg.LAN.Interface != "") {
		for _, n := range cfg.LAN.Networks {
			p, err := parsePrefix(n)
			if err != nil {
				warn("lan.networks: %v", err)
				continue
			}
			noNAT = append(noNAT, p)
		}
		noNAT = mergePrefixes(noNAT)
		if len(noNAT) == 0 && cfg.LAN.Interface != "" {
			warn("lan.masquerade = false without lan.networks: LAN traffic is NATed like any other")
		}
	}

	uplinkIfaces := map[string]bool{}
	for i, cu := range cfg.Uplinks {
		st := state[cu.Name]
		iface := cu.Interface
		if iface == "" {
			iface = st.Iface
		}
		if iface == "" {
			warn("uplink %q: no interface", cu.Name)
			continue
		}
		uplinkIfaces[iface] = true
		ur := UplinkRules{Name: cu.Name, Iface: iface, ConnMark: UplinkMark(i)}
		if ur.ConnMark == 0 {
			warn("uplink %q: more than %d uplinks, its connections are not marked", cu.Name, MaxUplinkMarks)
		}
		addr := st.Addr
		if addr.IsValid() && !addr.Is4() {
			addr = netip.Addr{}
		}
		switch mode := NATMode(cmp.Or(cu.SNAT, string(NATSNAT))); mode {
		case NATSNAT:
			ur.NAT, ur.Addr = NATSNAT, addr
		case NATMasquerade:
			ur.NAT = NATMasquerade
		case NATOff:
			ur.NAT = NATOff
		default:
			warn("uplink %q: unknown snat %q, not NATed", cu.Name, cu.SNAT)
			ur.NAT = NATOff
		}
		if ur.NAT != NATOff {
			ur.NoNAT = noNAT
		}
		if cu.Firewall != nil {
			ur.Filter = computeFilter(cu.Name, iface, cu.Firewall, warn)
		}
		rs.Uplinks = append(rs.Uplinks, ur)
	}

	for _, r := range cfg.Rules {
		if m, ok := computeMark(r, uplinkIfaces, warn); ok {
			rs.Marks = append(rs.Marks, m)
		}
	}

	for i, d := range cfg.Firewall.Deny {
		drop := true
		switch d.Action {
		case "", "drop":
		case "reject":
			drop = false
		default:
			warn("firewall.deny[%d]: unknown action %q, using drop", i, d.Action)
		}
		if d.Source != "" {
			p, err := parsePrefix(d.Source)
			switch {
			case err != nil:
				warn("firewall.deny[%d]: %v", i, err)
			case drop:
				rs.Deny.DropAddrs = append(rs.Deny.DropAddrs, p)
			default:
				rs.Deny.RejectAddrs = append(rs.Deny.RejectAddrs, p)
			}
		}
		if d.MAC != "" {
			mac, err := net.ParseMAC(d.MAC)
			switch {
			case err != nil || len(mac) != 6:
				warn("firewall.deny[%d]: bad mac %q", i, d.MAC)
			case drop:
				rs.Deny.DropMACs = append(rs.Deny.DropMACs, mac)
			default:
				rs.Deny.RejectMACs = append(rs.Deny.RejectMACs, mac)
			}
		}
	}
	rs.Deny.DropAddrs = mergePrefixes(rs.Deny.DropAddrs)
	rs.Deny.RejectAddrs = subtractPrefixes(mergePrefixes(rs.Deny.RejectAddrs), rs.Deny.DropAddrs)
	rs.Deny.DropMACs = uniqMACs(rs.Deny.DropMACs, nil)
	rs.Deny.RejectMACs = uniqMACs(rs.Deny.RejectMACs, rs.Deny.DropMACs)
	return rs
}

func computePolicy(s, key string, warn func(string, ...any)) Policy {
	switch s {
	case "", "accept":
		return Accept
	case "drop":
		return Drop
	}
	warn("firewall.%s: unknown policy %q, using accept", key, s)
	return Accept
}

func computeFilter(name, iface string, fw *policy.UplinkFirewall, warn func(string, ...any)) *InputFilter {
	f := &InputFilter{}
	for _, a := range fw.Allow {
		p, ok := protoNumber(a.Proto)
		if !ok {
			warn("uplink %q: firewall allow: unknown proto %q", name, a.Proto)
			continue
		}
		ports, ok := normPorts(a.Ports)
		if !ok || (len(ports) > 0 && !hasPorts(p)) {
			warn("uplink %q: firewall allow %s: bad ports %v", name, a.Proto, a.Ports)
			continue
		}
		f.Allow = append(f.Allow, Allow{Proto: p, Ports: ports})
	}
	for _, l := range fw.Limit {
		p, ok := protoNumber(l.Proto)
		if !ok || !hasPorts(p) || l.Port < 1 || l.Port > 65535 || l.Hits < 1 || l.Seconds < 1 {
			warn("uplink %q: firewall limit %+v: needs tcp/udp/sctp, a port, hits >= 1 and seconds >= 1", name, l)
			continue
		}
		rate, unit, period := limitRate(l.Seconds)
		if period != time.Duration(l.Seconds)*time.Second {
			warn("uplink %q: firewall limit %s/%d: %ds rounded up to %s", name, l.Proto, l.Port, l.Seconds, period)
		}
		rl := RateLimit{
			Proto: p, Port: uint16(l.Port), Burst: uint32(min(l.Hits, math.MaxInt32)),
			Rate: rate, Unit: unit, Period: period,
		}
		rl.Expire = time.Duration(rl.Burst) * period
		rl.Name = fmt.Sprintf("lim_%s_%s_%d", sanitize(iface), protoName(p), l.Port)
		f.Limits = append(f.Limits, rl)
	}
	for _, t := range fw.ICMPTypes {
		if t < 0 || t > 255 {
			warn("uplink %q: firewall icmp type %d out of range", name, t)
			continue
		}
		if !slices.Contains(f.ICMPTypes, uint8(t)) {
			f.ICMPTypes = append(f.ICMPTypes, uint8(t))
		}
	}
	return f
}

// limitUnits are the units both nftables and iptables hashlimit accept.
var limitUnits = []time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour}

// limitRate expresses "one token per seconds" as rate/unit, rounding seconds
// up to the next value that divides a unit.
func limitRate(seconds int) (rate uint64, unit, period time.Duration) {
	for d := max(seconds, 1); ; d++ {
		p := time.Duration(d) * time.Second
		for _, u := range limitUnits {
			if u >= p && u%p == 0 {
				return uint64(u / p), u, p
			}
		}
		if p >= limitUnits[len(limitUnits)-1] {
			return 1, limitUnits[len(limitUnits)-1], limitUnits[len(limitUnits)-1]
		}
	}
}

func computeMark(r policy.MarkRule, uplinkIfaces map[string]bool, warn func(string, ...any)) (MarkRule, bool) {
	m := MarkRule{Name: r.Name, Mark: r.Mark, InIface: r.InIface}
	if r.Mark == 0 || r.Mark&^UserMarkMask != 0 {
		warn("rule %q: mark %#x must be 1..0xffff", r.Name, r.Mark)
		return m, false
	}
	if r.UID != nil {
		if *r.UID < 0 {
			warn("rule %q: negative uid", r.Name)
			return m, false
		}
		u := uint32(*r.UID)
		m.UID = &u
	} else if r.User != "" {
		// Resolving a user name reads the passwd database, which Compute
		// must not do (it would not be pure); ResolveUsers does it.
		warn("rule %q: user %q is not resolved to a uid, rule skipped", r.Name, r.User)
		return m, false
	}
	if r.GID != nil {
		if *r.GID < 0 {
			warn("rule %q: negative gid", r.Name)
			return m, false
		}
		g := uint32(*r.GID)
		m.GID = &g
	}
	local := m.UID != nil || m.GID != nil
	if local && r.InIface != "" {
		warn("rule %q: uid/gid (local traffic) and in_interface (forwarded traffic) never match together, rule skipped", r.Name)
		return m, false
	}
	if uplinkIfaces[r.InIface] {
		// Traffic arriving from an uplink is never marked: its replies would
		// be routed by an uplink table.
		warn("rule %q: in_interface %q is an uplink, rule skipped", r.Name, r.InIface)
		return m, false
	}
	m.Prerouting = !local
	m.Output = r.InIface == ""
	for _, s := range r.Source {
		p, err := parsePrefix(s)
		if err != nil {
			warn("rule %q: source: %v", r.Name, err)
			return m, false
		}
		m.Sources = append(m.Sources, p)
	}
	for _, s := range r.Dest {
		p, err := parsePrefix(s)
		if err != nil {
			warn("rule %q: destination: %v", r.Name, err)
			return m, false
		}
		m.Dests = append(m.Dests, p)
	}
	m.Sources, m.Dests = mergePrefixes(m.Sources), mergePrefixes(m.Dests)
	if r.Proto != "" {
		p, ok := protoNumber(r.Proto)
		if !ok {
			warn("rule %q: unknown proto %q", r.Name, r.Proto)
			return m, false
		}
		m.Proto = p
	}
	ports, ok := normPorts(r.Ports)
	if !ok || (len(ports) > 0 && m.Proto != 0 && !hasPorts(m.Proto)) {
		warn("rule %q: bad ports %v", r.Name, r.Ports)
		return m, false
	}
	m.Ports = ports
	return m, true
}

// ResolveUsers returns a copy of rules in which every rule with `user` and no
// `uid` has the user's uid filled in (os/user lookup). It is the impure step
// Compute leaves to its caller.
func ResolveUsers(rules []policy.MarkRule) ([]policy.MarkRule, error) {
	out := slices.Clone(rules)
	for i := range out {
		r := &out[i]
		if r.UID != nil || r.User == "" {
			continue
		}
		u, err := user.Lookup(r.User)
		if err != nil {
			return nil, fmt.Errorf("rule %q: user %q: %w", r.Name, r.User, err)
		}
		uid, err := strconv.Atoi(u.Uid)
		if err != nil {
			return nil, fmt.Errorf("rule %q: user %q: uid %q: %w", r.Name, r.User, u.Uid, err)
		}
		r.UID = &uid
	}
	return out, nil
}

func normPorts(in []int) ([]uint16, bool) {
	var out []uint16
	for _, p := range in {
		if p < 1 || p > 65535 {
			return nil, false
		}
		out = append(out, uint16(p))
	}
	slices.Sort(out)
	return slices.Compact(out), true
}

// parsePrefix accepts an IPv4 address or prefix and returns the masked prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address or prefix", s)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address or prefix", s)
	}
	return p.Masked(), nil
}

// ipRange is an inclusive IPv4 range.
type ipRange struct{ lo, hi uint32 }

func prefixRange(p netip.Prefix) ipRange {
	a := p.Masked().Addr().As4()
	lo := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	return ipRange{lo, lo | uint32(uint64(1)<<(32-p.Bits())-1)}
}

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// mergeRanges sorts ranges and joins overlapping and adjacent ones: the
// kernel rejects overlapping interval-set elements.
func mergeRanges(rs []ipRange) []ipRange {
	slices.SortFunc(rs, func(a, b ipRange) int { return cmp.Compare(a.lo, b.lo) })
	var out []ipRange
	for _, r := range rs {
		if n := len(out); n > 0 && (r.lo <= out[n-1].hi || out[n-1].hi != math.MaxUint32 && r.lo == out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// rangePrefixes splits an inclusive range into the fewest CIDR prefixes.
func rangePrefixes(r ipRange) []netip.Prefix {
	var out []netip.Prefix
	lo := uint64(r.lo)
	for lo <= uint64(r.hi) {
		bits := 32
		for bits > 0 {
			size := uint64(1) << (32 - (bits - 1))
			if lo%size != 0 || lo+size-1 > uint64(r.hi) {
				break
			}
			bits--
		}
		out = append(out, netip.PrefixFrom(u32Addr(uint32(lo)), bits))
		lo += uint64(1) << (32 - bits)
	}
	return out
}

// mergePrefixes returns the union of ps as sorted, non-overlapping prefixes.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	rs := make([]ipRange, 0, len(ps))
	for _, p := range ps {
		rs = append(rs, prefixRange(p))
	}
	var out []netip.Prefix
	for _, r := range mergeRanges(rs) {
		out = append(out, rangePrefixes(r)...)
	}
	return out
}

// subtractPrefixes removes from a (merged) everything covered by b (merged).
func subtractPrefixes(a, b []netip.Prefix) []netip.Prefix {
	if len(a) == 0 || len(b) == 0 {
		return a
	}
	var bs []ipRange
	for _, p := range b {
		bs = append(bs, prefixRange(p))
	}
	var out []ipRange
	for _, p := range a {
		cur := []ipRange{prefixRange(p)}
		for _, x := range bs {
			var next []ipRange
			for _, r := range cur {
				if x.hi < r.lo || x.lo > r.hi {
					next = append(next, r)
					continue
				}
				if x.lo > r.lo {
					next = append(next, ipRange{r.lo, x.lo - 1})
				}
				if x.hi < r.hi {
					next = append(next, ipRange{x.hi + 1, r.hi})
				}
			}
			cur = next
		}
		out = append(out, cur...)
	}
	var res []netip.Prefix
	for _, r := range mergeRanges(out) {
		res = append(res, rangePrefixes(r)...)
	}
	return res
}

func uniqMACs(in, exclude []net.HardwareAddr) []net.HardwareAddr {
	seen := map[string]bool{}
	for _, m := range exclude {
		seen[m.String()] = true
	}
	var out []net.HardwareAddr
	for _, m := range in {
		if !seen[m.String()] {
			seen[m.String()] = true
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b net.HardwareAddr) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// sanitize makes an interface name usable inside nftables and iptables
// identifiers.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '_'
	}, s)
}
