package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Protocol is uplinkd's rtnetlink protocol number. Every rule and route
// uplinkd writes carries it, so `ip rule`/`ip route` show "proto uplinkd"
// (packaging registers the name in /etc/iproute2/rt_protos.d/uplinkd.conf) and
// flush/adoption find exactly what is owned.
const Protocol = 157

// MainTable is the kernel's main routing table.
const MainTable = 254

// Link is one network interface as the kernel reports it.
type Link struct {
	Index int
	Name  string
	// Up: administratively up. Carrier: IFF_LOWER_UP (the far end is there).
	Up      bool
	Carrier bool
	// PointToPoint: IFF_POINTOPOINT or an address with a peer.
	PointToPoint bool
}

// Addr is one IPv4 or IPv6 address on an interface.
type Addr struct {
	Prefix netip.Prefix
	// Peer is the remote end of a point-to-point address (`peer B`), if any.
	Peer netip.Addr
	// Flags are the IPv6 address states that make an address unusable as
	// a source (always 0 for IPv4).
	Flags AddrFlags
}

// AddrFlags are IPv6 address states (IFA_F_*), in uplinkd's own bits.
type AddrFlags uint8

// IPv6 address states: an address in any of them is not usable as a
// source. Tentative: duplicate address detection is still running (the
// kernel does not let a socket bind it); DADFailed: another host has it;
// Deprecated: its preferred lifetime ended (a renumbered prefix), new
// connections must not start from it.
const (
	AddrTentative AddrFlags = 1 << iota
	AddrDeprecated
	AddrDADFailed
)

// Usable6 reports whether an IPv6 address may source new connections.
func (a Addr) Usable6() bool {
	return a.Flags&(AddrTentative|AddrDeprecated|AddrDADFailed) == 0 && a.Prefix.Addr().IsGlobalUnicast()
}

// Observed is a snapshot of the kernel state that policy decisions depend on.
type Observed struct {
	Links map[string]Link
	// Addrs are the global-scope IPv4 addresses per interface name, primary first.
	Addrs map[string][]Addr
	// Addrs6 are the IPv6 addresses (global and link-local) per interface
	// name with their states, when IPv6 is observed (some uplink has ipv6
	// on); nil otherwise.
	Addrs6 map[string][]Addr
	// Routes are the unicast routes uplinkd decides on: those of main and
	// the uplinks' tables, uplinkd's own in any table, and the default
	// routes of every table (owned and foreign). IPv6 routes (Dst is an
	// IPv6 prefix) are there only when IPv6 is observed.
	Routes []Route
	// Rules are all policy rules (owned and foreign); IPv6 ones (IPv6 set)
	// only when IPv6 is observed.
	Rules []Rule
	// Sysctls holds the current values of the keys Desired names.
	Sysctls map[string]string
	// Delegated are the IPv6 prefixes delegated to each interface that
	// uplinkd learned from the PD client (`uplinkd event --delegated`),
	// the current one first, then former ones still held
	// (internal/delegstate); not kernel state, but an input of the pass
	// the daemon fills in from what it keeps.
	Delegated map[string][]netip.Prefix
	// LinkSeq is the sequence number of the newest link history record
	// (internal/linklog) this snapshot includes: what happened to the links
	// up to here is in the history, and nothing after it is in the snapshot.
	LinkSeq uint64
}

// Nexthop is one path of a route.
type Nexthop struct {
	Gateway netip.Addr // invalid: directly connected / point-to-point
	Dev     string
	Weight  int // 1..256; 0 means 1
}

// Route is one IPv4 or IPv6 route; its family is that of Dst.
type Route struct {
	Table    int
	Dst      netip.Prefix
	Metric   int
	Protocol int
	// ScopeLink marks a `scope link` route (the gateway host route).
	ScopeLink bool
	Nexthops  []Nexthop
}

// Rule is one IPv4 or IPv6 policy-routing rule.
type Rule struct {
	// IPv6: an IPv6 rule (`ip -6 rule`); a rule "from all" has no other
	// trace of its family.
	IPv6     bool
	Priority int
	Table    int
	Src      netip.Prefix // invalid: from all
	Mark     uint32
	Mask     uint32 // 0 with Mark != 0: 0xffffffff
	Protocol int
	// SuppressDefault is `suppress_prefixlength 0`: the lookup's result is
	// ignored when it is a default route. uplinkd writes it on its
	// `lookup main` rule so that specific routes in main win while default
	// routes that pppd or a DHCP client put there are routed around.
	SuppressDefault bool
	// Extra describes selectors uplinkd never writes (iif, uidrange, ports,
	// other actions...), so a foreign rule that has them never matches ours.
	Extra string
}

// Sysctl is one kernel setting under /proc/sys, with dots as separators
// (net.ipv4.ip_forward).
type Sysctl struct {
	Key   string
	Value string
}

// Desired is the whole state uplinkd wants, computed from config and Observed.
type Desired struct {
	Rules   []Rule
	Routes  []Route
	Sysctls []Sysctl
	// Unwanted are foreign routes that must go (a default route via the LAN
	// interface when remove_default_route is set).
	Unwanted []Route
	// Uplinks is the per-uplink verdict that led here (for status and logs).
	Uplinks []UplinkState
}

// UplinkState is what policy concluded about one uplink.
type UplinkState struct {
	Name    string
	Iface   string
	Table   int
	Present bool // interface exists
	Carrier bool
	Addr    netip.Addr
	Gateway netip.Addr // invalid on point-to-point links
	Peer    netip.Addr
	Usable  bool // can carry the main default route
	Active  bool // is in the main default route now
	// Drained: taken out of the default route by hand (Drained); Usable
	// still says what the link could do.
	Drained bool
	// Degraded: up, but its probes' loss or latency is above the check's
	// warn_loss or warn_latency (Degraded); it carries less or no new
	// default traffic, per the check's degraded.
	Degraded bool
	Reason   string

	// IPv6 is the uplink's IPv6 side; zero when the uplink has ipv6 off.
	IPv6 UplinkState6
}

// UplinkState6 is what policy concluded about an uplink's IPv6 side.
type UplinkState6 struct {
	On bool // the uplink has ipv6 on
	// Addr is the first usable global address (the kernel's order): the
	// one probes leave from. Every usable one has its rule. (One address,
	// not the list, keeps UplinkState comparable.)
	Addr    netip.Addr
	Gateway netip.Addr // invalid on point-to-point links
	Usable  bool       // can carry uplinkd's IPv6 default route
	Active  bool       // is in uplinkd's IPv6 default route now
	Reason  string
}

// RuleID is what makes a rule one kernel object (Key's fields) as a
// comparable value: Diff and the loop key maps by it for every rule of every
// pass, without building a string.
type RuleID struct {
	Priority, Table int
	Src             netip.Prefix
	Mark, Mask      uint32 // Mask as the kernel applies it (see Key)
	SuppressDefault bool
	Extra           string
	IPv6            bool
}

// ID is r's RuleID: equal IDs, equal keys.
func (r Rule) ID() RuleID {
	return RuleID{Priority: r.Priority, Table: r.Table, Src: r.Src, Mark: r.Mark, Mask: r.effectiveMask(),
		SuppressDefault: r.SuppressDefault, Extra: r.Extra, IPv6: r.IPv6}
}

// RouteID is a route's slot (Key's fields) as a comparable value (see
// RuleID).
type RouteID struct {
	Table  int
	Dst    netip.Prefix
	Metric int
}

// ID is r's RouteID: equal IDs, equal keys.
func (r Route) ID() RouteID { return RouteID{Table: r.Table, Dst: r.Dst, Metric: r.Metric} }

// Key identifies a rule: two rules with the same key are the same rule.
//
// Keys are built several times per pass for every observed and desired
// rule and route, so they are appended by hand instead of with fmt; the
// text is that of "%d/%d/%s/%x/%x/%t/%s" of the fields.
func (r Rule) Key() string {
	b := make([]byte, 0, 64)
	b = strconv.AppendInt(b, int64(r.Priority), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(r.Table), 10)
	b = append(b, '/')
	b = appendPrefix(b, r.Src)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(r.Mark), 16)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(r.effectiveMask()), 16)
	b = append(b, '/')
	b = strconv.AppendBool(b, r.SuppressDefault)
	b = append(b, '/')
	b = append(b, r.Extra...)
	if r.IPv6 {
		// Appended, so IPv4 keys (and what they are compared with) stay.
		b = append(b, "/6"...)
	}
	return string(b)
}

func (r Rule) effectiveMask() uint32 {
	if r.Mark != 0 && r.Mask == 0 {
		return 0xffffffff
	}
	return r.Mask
}

// Key identifies a route slot in the kernel: table, destination and metric
// (IPv4 routes are keyed by table/prefix/tos/priority).
// The text is "%d/%s/%d" of the three (see Rule.Key for why by hand).
func (r Route) Key() string {
	b := make([]byte, 0, 32)
	b = strconv.AppendInt(b, int64(r.Table), 10)
	b = append(b, '/')
	b = appendPrefix(b, r.Dst)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(r.Metric), 10)
	return string(b)
}

// appendPrefix appends p as %s prints it.
func appendPrefix(b []byte, p netip.Prefix) []byte {
	if !p.IsValid() {
		return append(b, "invalid Prefix"...)
	}
	return p.AppendTo(b)
}

// Equal reports whether two routes would be the same kernel object.
func (r Route) Equal(o Route) bool {
	if r.ID() != o.ID() || r.ScopeLink != o.ScopeLink || len(r.Nexthops) != len(o.Nexthops) {
		return false
	}
	a, b := normNexthops(r.Nexthops), normNexthops(o.Nexthops)
	return slices.Equal(a, b)
}

func normNexthops(in []Nexthop) []Nexthop {
	out := slices.Clone(in)
	for i := range out {
		if out[i].Weight == 0 {
			out[i].Weight = 1
		}
	}
	// A single-path route has no weight in the kernel.
	if len(out) == 1 {
		out[0].Weight = 1
	}
	slices.SortFunc(out, func(a, b Nexthop) int {
		if c := strings.Compare(a.Dev, b.Dev); c != 0 {
			return c
		}
		return a.Gateway.Compare(b.Gateway)
	})
	return out
}

// tableName renders a table number the way `ip` accepts it.
func tableName(t int) string {
	switch t {
	case MainTable:
		return "main"
	case 253:
		return "default"
	case 255:
		return "local"
	}
	return fmt.Sprint(t)
}

// IPv6 reports whether the route is an IPv6 route.
func (r Route) IPv6() bool { return r.Dst.Addr().Is6() }

// ipFamily is the `ip` option of a family: "-6 " for IPv6, else "".
func ipFamily(v6 bool) string {
	if v6 {
		return "-6 "
	}
	return ""
}

// IPRule renders the rule as `ip rule` arguments (after "ip rule add|del").
func (r Rule) IPRule() string {
	var b strings.Builder
	fmt.Fprintf(&b, "priority %d", r.Priority)
	if r.Src.IsValid() {
		if r.Src.Bits() == r.Src.Addr().BitLen() {
			fmt.Fprintf(&b, " from %s", r.Src.Addr())
		} else {
			fmt.Fprintf(&b, " from %s", r.Src)
		}
	}
	if r.Mark != 0 {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
		if m := r.effectiveMask(); m != 0xffffffff {
			fmt.Fprintf(&b, "/%#x", m)
		}
	}
	fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
	if r.SuppressDefault {
		b.WriteString(" suppress_prefixlength 0")
	}
	if r.Protocol != 0 {
		fmt.Fprintf(&b, " proto %s", protoName(r.Protocol))
	}
	return b.String()
}

// IPRoute renders the route as `ip route` arguments (after "ip route replace|del").
func (r Route) IPRoute() string {
	var b strings.Builder
	if r.Dst.Bits() == 0 {
		b.WriteString("default")
	} else if r.Dst.Bits() == r.Dst.Addr().BitLen() {
		b.WriteString(r.Dst.Addr().String())
	} else {
		b.WriteString(r.Dst.String())
	}
	if len(r.Nexthops) == 1 {
		nh := r.Nexthops[0]
		if nh.Gateway.IsValid() {
			fmt.Fprintf(&b, " via %s", nh.Gateway)
		}
		fmt.Fprintf(&b, " dev %s", nh.Dev)
	}
	fmt.Fprintf(&b, " table %s", tableName(r.Table))
	if r.Protocol != 0 {
		fmt.Fprintf(&b, " proto %s", protoName(r.Protocol))
	}
	if r.ScopeLink {
		b.WriteString(" scope link")
	}
	fmt.Fprintf(&b, " metric %d", r.Metric)
	if len(r.Nexthops) > 1 {
		for _, nh := range normNexthops(r.Nexthops) {
			b.WriteString(" nexthop")
			if nh.Gateway.IsValid() {
				fmt.Fprintf(&b, " via %s", nh.Gateway)
			}
			fmt.Fprintf(&b, " dev %s weight %d", nh.Dev, nh.Weight)
		}
	}
	return b.String()
}

// protoName prints the number: `ip` only knows the name "uplinkd" once the
// package has installed rt_protos.d/uplinkd.conf, and plan output must run anywhere.
func protoName(p int) string { return fmt.Sprint(p) }

// writeVerdict ends an uplink line of Desired.String: its address, gateway
// and whether it carries the default route.
func writeVerdict(b *strings.Builder, addr, gw netip.Addr, active bool) {
	if addr.IsValid() {
		fmt.Fprintf(b, " addr %s", addr)
	}
	if gw.IsValid() {
		fmt.Fprintf(b, " gw %s", gw)
	}
	if active {
		b.WriteString(" active")
	}
	b.WriteString("\n")
}

// String renders the desired state as text, one object per line, in a stable
// order: the golden files of the policy tests and `plan --verbose` use it.
func (d Desired) String() string {
	var b strings.Builder
	for _, u := range d.Uplinks {
		fmt.Fprintf(&b, "uplink %s iface %s table %d: %s", u.Name, u.Iface, u.Table, u.Reason)
		writeVerdict(&b, u.Addr, u.Gateway, u.Active)
		if v6 := u.IPv6; v6.On {
			fmt.Fprintf(&b, "uplink %s ipv6: %s", u.Name, v6.Reason)
			writeVerdict(&b, v6.Addr, v6.Gateway, v6.Active)
		}
	}
	for _, r := range d.Rules {
		fmt.Fprintf(&b, "rule %s%s\n", ipFamily(r.IPv6), r.IPRule())
	}
	for _, r := range d.Routes {
		fmt.Fprintf(&b, "route %s%s\n", ipFamily(r.IPv6()), r.IPRoute())
	}
	for _, s := range d.Sysctls {
		fmt.Fprintf(&b, "sysctl %s=%s\n", s.Key, s.Value)
	}
	for _, r := range d.Unwanted {
		fmt.Fprintf(&b, "remove %s%s\n", ipFamily(r.IPv6()), r.IPRoute())
	}
	return b.String()
}
