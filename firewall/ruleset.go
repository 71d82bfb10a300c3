package firewall

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go4.org/netipx"

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
	// Healthy is, per [[service]] name, the backends that pass their
	// health check. A service missing from the map has all its backends
	// in the set (its check is off, or nothing has been checked yet).
	Healthy map[string][]netip.AddrPort
	// NPT6 are the NPTv6 mappings of [lan.ipv6] mode npt
	// (policy.NPT6Maps of this pass's observation).
	NPT6 []policy.NPT6
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

	// Services are the [[service]] DNATs (services.go).
	Services []ServiceRules
	// HairpinSources are the LAN networks whose DNATed connections back
	// into the LAN are masqueraded (empty: no hairpin).
	HairpinSources []netip.Prefix

	// NPT6 are the NPTv6 mappings and Filters6 the IPv6 input filters of
	// the uplinks with ipv6 on (npt6.go); nil for an IPv4-only config,
	// which then renders and writes exactly what it did before.
	NPT6     []NPT6
	Filters6 []Filter6
	Marks6   []Mark6
	// IPv6 is set when some uplink has ipv6 on: then InputPolicy,
	// ForwardPolicy and the deny list (its IPv6 sources and its MACs)
	// apply to IPv6 too (filter6.go). False for an IPv4-only config.
	IPv6 bool
}

// UplinkRules is everything that is per uplink.
type UplinkRules struct {
	Name  string
	Iface string
	// ConnMark is UplinkMark(index), 0 when there are too many uplinks.
	ConnMark uint32
	// NAT is the configured mode. With NATSNAT the rule names Addr; while
	// Addr is not known the uplink is masqueraded instead, since the kernel
	// may already route through it with an address this ruleset has not
	// seen (buildRules).
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
// has the same guarantee.) Period is the configured window, which the loader
// only accepts when both nftables and iptables hashlimit can express it
// exactly as Rate/Unit (a divisor of a day).
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
	// DropAddrs6 and RejectAddrs6 are the IPv6 sources, filtered in the
	// IPv6 firewall only (the MACs are denied in both).
	DropAddrs6   []netip.Prefix
	RejectAddrs6 []netip.Prefix
}

// Empty reports whether there is nothing to deny for IPv4.
func (d Deny) Empty() bool {
	return len(d.DropAddrs)+len(d.RejectAddrs)+len(d.DropMACs)+len(d.RejectMACs) == 0
}

// Empty6 reports whether there is nothing to deny for IPv6.
func (d Deny) Empty6() bool {
	return len(d.DropAddrs6)+len(d.RejectAddrs6)+len(d.DropMACs)+len(d.RejectMACs) == 0
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

// protoNumber is the number of a protocol by name, 0 for "" (any). The
// loader admits only tcp, udp and sctp; the others serve hand-built rules.
func protoNumber(p policy.Proto) uint8 { return protoNames[strings.ToLower(string(p))] }

func protoName(p uint8) string {
	for n, v := range protoNames {
		if v == p {
			return n
		}
	}
	return strconv.Itoa(int(p))
}

// Compute derives the desired netfilter state. It is a pure function of the
// loaded config (which has already rejected everything a backend cannot
// install, resolved user names and applied defaults) and policy's verdicts:
// nothing is skipped or rounded here.
func Compute(in Input) Ruleset {
	cfg := in.Config
	if cfg == nil {
		cfg = &policy.Config{}
	}
	rs := Ruleset{
		InputPolicy:   chainPolicy(cfg.Firewall.InputPolicy),
		ForwardPolicy: chainPolicy(cfg.Firewall.ForwardPolicy),
		LANInterface:  cfg.LAN.Interface,
		IPv6:          cfg.IPv6On(),
	}

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
	if !cfg.LAN.Masquerade {
		for _, p := range cfg.LAN.Networks {
			noNAT = append(noNAT, p.Masked())
		}
		noNAT = mergePrefixes(noNAT)
	}

	for i, cu := range cfg.Uplinks {
		st := state[cu.Name]
		ur := UplinkRules{Name: cu.Name, Iface: cu.Interface, ConnMark: UplinkMark(i), NAT: NATMode(cu.SNAT)}
		if ur.NAT == NATSNAT {
			if addr := st.Addr; addr.Is4() {
				ur.Addr = addr
			}
		}
		if ur.NAT != NATOff {
			ur.NoNAT = noNAT
		}
		if cu.IPv6 && ur.ConnMark != 0 {
			rs.Marks6 = append(rs.Marks6, Mark6{Uplink: cu.Name, Iface: cu.Interface, ConnMark: ur.ConnMark})
		}
		if cu.Firewall != nil {
			ur.Filter = computeFilter(cu.Interface, cu.Firewall)
			if cu.IPv6 {
				rs.Filters6 = append(rs.Filters6, Filter6{Uplink: cu.Name, Iface: cu.Interface, Filter: ur.Filter})
			}
		}
		rs.Uplinks = append(rs.Uplinks, ur)
	}

	for _, r := range cfg.Rules {
		rs.Marks = append(rs.Marks, computeMark(r))
	}

	for _, d := range cfg.Firewall.Deny {
		drop := d.Action != policy.DenyReject
		switch {
		case d.Source.IsValid() && d.Source.Addr().Is6():
			// Only the IPv6 firewall, which exists with an uplink with
			// ipv6 on (the loader refuses an IPv6 source without one).
			if drop {
				rs.Deny.DropAddrs6 = append(rs.Deny.DropAddrs6, d.Source.Masked())
			} else {
				rs.Deny.RejectAddrs6 = append(rs.Deny.RejectAddrs6, d.Source.Masked())
			}
		case d.Source.IsValid():
			if drop {
				rs.Deny.DropAddrs = append(rs.Deny.DropAddrs, d.Source.Masked())
			} else {
				rs.Deny.RejectAddrs = append(rs.Deny.RejectAddrs, d.Source.Masked())
			}
		}
		if d.MAC != "" {
			mac, err := net.ParseMAC(d.MAC)
			switch {
			case err != nil:
				// The loader stores canonical MACs; a hand-built config
				// with a bad one denies nothing rather than everything.
			case drop:
				rs.Deny.DropMACs = append(rs.Deny.DropMACs, mac)
			default:
				rs.Deny.RejectMACs = append(rs.Deny.RejectMACs, mac)
			}
		}
	}
	computeServices(&rs, cfg, state, in.Healthy)
	for _, m := range in.NPT6 {
		rs.NPT6 = append(rs.NPT6, NPT6{Uplink: m.Uplink, Iface: m.Iface, Inside: m.Inside, Outside: m.Outside})
	}

	rs.Deny.DropAddrs = mergePrefixes(rs.Deny.DropAddrs)
	rs.Deny.RejectAddrs = subtractPrefixes(mergePrefixes(rs.Deny.RejectAddrs), rs.Deny.DropAddrs)
	rs.Deny.DropAddrs6 = mergePrefixes(rs.Deny.DropAddrs6)
	rs.Deny.RejectAddrs6 = subtractPrefixes(mergePrefixes(rs.Deny.RejectAddrs6), rs.Deny.DropAddrs6)
	rs.Deny.DropMACs = uniqMACs(rs.Deny.DropMACs, nil)
	rs.Deny.RejectMACs = uniqMACs(rs.Deny.RejectMACs, rs.Deny.DropMACs)
	return rs
}

func chainPolicy(p policy.Policy) Policy {
	if p == policy.PolicyDrop {
		return Drop
	}
	return Accept
}

func computeFilter(iface string, fw *policy.UplinkFirewall) *InputFilter {
	f := &InputFilter{}
	for _, a := range fw.Allow {
		f.Allow = append(f.Allow, Allow{Proto: protoNumber(a.Proto), Ports: normPorts(a.Ports)})
	}
	for _, l := range fw.Limit {
		p := protoNumber(l.Proto)
		name := fmt.Sprintf("lim_%s_%s_%d", sanitize(iface), protoName(p), l.Port)
		f.Limits = append(f.Limits, newRateLimit(p, l.Port, l.Hits, l.Seconds, name))
	}
	for _, t := range fw.ICMPTypes {
		if !slices.Contains(f.ICMPTypes, t) {
			f.ICMPTypes = append(f.ICMPTypes, t)
		}
	}
	return f
}

// newRateLimit is a per-source limit of hits new connections per seconds
// (an [uplink.firewall] limit or a [[service]] limit).
func newRateLimit(proto uint8, port uint16, hits, seconds int, name string) RateLimit {
	rate, unit := limitRate(seconds)
	period := time.Duration(seconds) * time.Second
	rl := RateLimit{
		Proto: proto, Port: port, Burst: uint32(min(hits, math.MaxInt32)),
		Rate: rate, Unit: unit, Period: period, Name: name,
	}
	rl.Expire = time.Duration(rl.Burst) * period
	return rl
}

// limitUnits are the units both nftables and iptables hashlimit accept.
var limitUnits = []time.Duration{time.Second, time.Minute, time.Hour, 24 * time.Hour}

// limitRate expresses "one token per seconds" as rate/unit: the smallest
// unit that the window divides. The loader accepts only windows that divide
// a day, so there always is one; anything else gets one token a day.
func limitRate(seconds int) (rate uint64, unit time.Duration) {
	p := time.Duration(max(seconds, 1)) * time.Second
	for _, u := range limitUnits {
		if u >= p && u%p == 0 {
			return uint64(u / p), u
		}
	}
	return 1, limitUnits[len(limitUnits)-1]
}

func computeMark(r policy.MarkRule) MarkRule {
	m := MarkRule{Name: r.Name, Mark: r.Mark, InIface: r.InIface, UID: r.UID, GID: r.GID, Proto: protoNumber(r.Proto)}
	// The loader rejects uid/gid together with in_interface: local traffic
	// has no input interface.
	local := m.UID != nil || m.GID != nil
	m.Prerouting = !local
	m.Output = r.InIface == ""
	for _, p := range r.Source {
		m.Sources = append(m.Sources, p.Masked())
	}
	for _, p := range r.Dest {
		m.Dests = append(m.Dests, p.Masked())
	}
	m.Sources, m.Dests = mergePrefixes(m.Sources), mergePrefixes(m.Dests)
	m.Ports = normPorts(r.Ports)
	return m
}

func normPorts(in []uint16) []uint16 {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// ipRange is an inclusive IPv4 range.
type ipRange struct{ lo, hi uint32 }

func u32Addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// The prefix set algebra is go4.org/netipx's IPSet: a union of prefixes
// comes back as the fewest sorted, non-overlapping prefixes that cover it
// (adjacent ones joined), which is what the kernel accepts in an interval
// set and what keeps a Ruleset comparable.

// ipSet builds b's set. IPSet's error only lists invalid prefixes it
// skipped; every prefix here was parsed by the loader or by Compute.
func ipSet(b *netipx.IPSetBuilder) *netipx.IPSet {
	s, _ := b.IPSet()
	return s
}

func addPrefixes(b *netipx.IPSetBuilder, ps []netip.Prefix) {
	for _, p := range ps {
		b.AddPrefix(p)
	}
}

// mergedRanges is the union of the IPv4 prefixes ps as sorted inclusive
// ranges, none overlapping or adjacent: the elements of an nftables
// interval set (the kernel rejects overlapping ones).
func mergedRanges(ps []netip.Prefix) []ipRange {
	var b netipx.IPSetBuilder
	addPrefixes(&b, ps)
	var out []ipRange
	for _, r := range ipSet(&b).Ranges() {
		out = append(out, ipRange{addrU32(r.From()), addrU32(r.To())})
	}
	return out
}

// mergePrefixes returns the union of ps as sorted, non-overlapping prefixes.
func mergePrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	var b netipx.IPSetBuilder
	addPrefixes(&b, ps)
	return ipSet(&b).Prefixes()
}

// subtractPrefixes removes from a (merged) everything covered by b (merged).
func subtractPrefixes(a, b []netip.Prefix) []netip.Prefix {
	if len(a) == 0 || len(b) == 0 {
		return a
	}
	var sb netipx.IPSetBuilder
	addPrefixes(&sb, a)
	for _, p := range b {
		sb.RemovePrefix(p)
	}
	return ipSet(&sb).Prefixes()
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
