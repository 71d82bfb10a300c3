package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Health is the probe verdict per uplink name: false means "link up but
// failed" and keeps the uplink out of the main default route. A missing name
// means no verdict, which counts as healthy (uplinks without probes).
type Health map[string]bool

// Drained is the set of uplinks an administrator took out of service by
// hand (`uplinkd drain NAME`), by name. A drained uplink keeps its table,
// its `from <address>` rule, its sticky rule and NAT, so connections that
// already use it and traffic pinned to it by a [[rule]] go on; it only
// stops taking new default traffic: it is left out of the default route,
// its load balancing and the tier choice. A nil set drains nothing.
type Drained map[string]bool

// Degraded is the set of uplinks whose health machine is at the degraded
// level (HealthMachine.Degraded: up, but loss or latency above the check's
// warnings), by name. Each one's check says what that does: with degraded
// = "lower-weight" it keeps degraded_weight percent of its weight in the
// default route; with "leave" it leaves the route while an uplink that is
// neither degraded nor drained is usable, in any tier (degraded beats
// nothing). A nil set degrades nothing, and then the output is exactly
// ComputeFrom's.
type Degraded map[string]bool

// UserMarkMask is the part of the packet mark that [[rule]] marks live in;
// the upper bits are left to the firewall's per-uplink connection marks.
const UserMarkMask = 0x0000ffff

// MaxNexthopWeight is the largest weight of a multipath next hop (8 bits,
// stored minus one, in the kernel).
const MaxNexthopWeight = 256

// UplinkMarkMask holds the uplink a connection started on: (i+1)<<16 for
// the i-th [[uplink]], in the conntrack mark (set by the firewall) and, for
// later LAN packets of the connection, in the packet mark.
const UplinkMarkMask = 0x00ff0000

// MaxUplinks is how many uplinks fit in UplinkMarkMask.
const MaxUplinks = 255

// UplinkMark is the mark of the uplink at index i of Config.Uplinks.
func UplinkMark(i int) uint32 {
	if i < 0 || i >= MaxUplinks {
		return 0
	}
	return uint32(i+1) << 16
}

var defaultRoute = netip.MustParsePrefix("0.0.0.0/0")

const reasonProbesFailing = "probes failing"

// Compute is the pure heart of uplinkd: from the configuration, the kernel
// snapshot and the probe verdicts it derives the whole routing state uplinkd
// wants. It never looks at what uplinkd already installed, so the same inputs
// always give the same output (adoption after a restart falls out of that).
func Compute(cfg *Config, obs Observed, health Health) Desired {
	return ComputeFrom(cfg, obs, LinkStates(cfg, obs), health, nil)
}

// ComputeFrom is Compute for a caller that already has LinkStates(cfg, obs)
// (the daemon feeds them to the health machines first), with the uplinks
// drained by hand; links is not modified.
func ComputeFrom(cfg *Config, obs Observed, links []UplinkState, health Health, drained Drained) Desired {
	return ComputeWith(cfg, obs, links, health, drained, nil)
}

// ComputeWith is ComputeFrom with the uplinks at the degraded level: the
// daemon's pass (and anything that wants to see its routes) calls it.
func ComputeWith(cfg *Config, obs Observed, links []UplinkState, health Health, drained Drained, degraded Degraded) Desired {
	var d Desired
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		st := links[i]
		st.Drained = drained[u.Name]
		if st.Usable {
			if ok, known := health[u.Name]; known && !ok {
				st.Usable, st.Reason = false, reasonProbesFailing
			}
		}
		// Only an uplink whose check can degrade it and that is usable is.
		st.Degraded = degraded[u.Name] && st.Usable && u.Check.Warns()
		d.Uplinks = append(d.Uplinks, st)
		if !st.Present {
			continue
		}
		// rp_filter goes on as soon as the interface exists: it is then in
		// place before its first packet, and a redial's address pass (the
		// one that brings the uplink back) has one kernel write less to
		// wait for, since pppd creates ppp0 well before IPCP gives it an
		// address.
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv4/conf/" + u.Interface + "/rp_filter", Value: u.RPFilter.Sysctl()})
		if !st.Addr.IsValid() {
			continue
		}
		d.Rules = append(d.Rules, Rule{
			Priority: u.RulePriority,
			Table:    u.Table,
			Src:      netip.PrefixFrom(st.Addr, 32),
			Protocol: Protocol,
		})
		d.Routes = append(d.Routes, tableRoutes(u, st)...)
	}

	for _, r := range cfg.Rules {
		u := cfg.UplinkByName(r.Uplink)
		if u == nil {
			continue // the loader rejects this; stay total for hand-built configs
		}
		d.Rules = append(d.Rules, Rule{
			Priority: r.Priority,
			Table:    u.Table,
			Mark:     r.Mark,
			Mask:     UserMarkMask,
			Protocol: Protocol,
		})
	}

	// The default route for traffic without a more specific route lives in
	// uplinkd's own table, reached after `lookup main suppress_prefixlength
	// 0` (the wg-quick pattern): specific routes in main still win, and a
	// default route that pppd's `defaultroute` or a DHCP client keeps in
	// main is neither fought nor used while uplinkd has a usable uplink.
	// When none is usable, the own table is empty and the lookup falls
	// through to main's own default route, if any.
	if len(cfg.Uplinks) > 0 {
		prio, table := cfg.Daemon.DefaultPriority, cfg.Daemon.DefaultTable
		d.Rules = append(d.Rules,
			Rule{Priority: prio, Table: MainTable, SuppressDefault: true, Protocol: Protocol},
			Rule{Priority: prio + 1, Table: table, Protocol: Protocol})
	}
	if def, ok := defaultRouteOf(cfg, d.Uplinks); ok {
		d.Routes = append(d.Routes, def)
	}
	// A balanced connection stays on the uplink it started on: the firewall
	// restores the uplink's connection mark on its later packets, and these
	// rules route them by it, whatever the multipath hash says after the
	// default route changed. Only usable uplinks keep theirs: a failed
	// uplink's connections are deleted and start over elsewhere.
	sticky := cfg.Daemon.StickyPriority
	for i, st := range d.Uplinks {
		if st.Usable {
			d.Rules = append(d.Rules, Rule{Priority: sticky + i, Table: st.Table,
				Mark: UplinkMark(i), Mask: UplinkMarkMask, Protocol: Protocol})
		}
	}
	compute6(cfg, obs, health, &d)
	if len(cfg.Uplinks) > 1 {
		// Hash on the 5-tuple, so weights split connections, not hosts.
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv4/fib_multipath_hash_policy", Value: "1"})
	}

	if cfg.LAN.Forwarding {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv4/ip_forward", Value: "1"})
	}
	if slices.ContainsFunc(cfg.Uplinks, func(u Uplink) bool { return u.RPFilter == RPFilterOff }) {
		// The kernel uses max(all, iface): "off" on one interface only works
		// when "all" is off too.
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv4/conf/all/rp_filter", Value: "0"})
	}

	if lan := cfg.LAN.Interface; lan != "" && cfg.LAN.RemoveDefaultRoute {
		for _, r := range obs.Routes {
			if r.Table == MainTable && r.Dst.Bits() == 0 && !r.IPv6() && r.Protocol != Protocol &&
				slices.ContainsFunc(r.Nexthops, func(nh Nexthop) bool { return nh.Dev == lan }) {
				d.Unwanted = append(d.Unwanted, r)
			}
		}
	}
	return d
}

// LinkStates is the link-layer verdict per uplink, in config order, without
// probe verdicts: what the health machines are fed before Compute.
func LinkStates(cfg *Config, obs Observed) []UplinkState {
	out := make([]UplinkState, len(cfg.Uplinks))
	for i := range cfg.Uplinks {
		out[i] = uplinkState(&cfg.Uplinks[i], obs)
	}
	return out
}

func uplinkState(u *Uplink, obs Observed) UplinkState {
	st := UplinkState{Name: u.Name, Iface: u.Interface, Table: u.Table}
	link, ok := obs.Links[u.Interface]
	if !ok {
		st.Reason = "interface absent"
		return st
	}
	st.Present, st.Carrier = true, link.Up && link.Carrier
	addrs := obs.Addrs[u.Interface]
	if len(addrs) == 0 {
		st.Reason = "no address"
		return st
	}
	st.Addr, st.Peer = addrs[0].Prefix.Addr(), addrs[0].Peer
	p2p := u.PointToPoint() || link.PointToPoint || st.Peer.IsValid()
	offSubnet := ""
	if !p2p {
		st.Gateway = gatewayFor(u, obs, addrs[0].Prefix)
		offSubnet = gatewayOffSubnet(u, st.Gateway, addrs)
	}
	switch {
	case !link.Up:
		st.Reason = "interface down"
	case !link.Carrier:
		st.Reason = "no carrier"
	case offSubnet != "":
		// The kernel refuses a route via a gateway it cannot reach on
		// the link (in uplinkd's default table, which holds no route to
		// it): asking again every pass would fail every pass. The uplink
		// is down with the reason, which the daemon logs when it changes
		// and `status` shows.
		st.Gateway, st.Reason = netip.Addr{}, offSubnet
	case !p2p && !st.Gateway.IsValid():
		st.Reason = "no gateway"
	default:
		st.Usable, st.Reason = true, "up"
	}
	return st
}

// gatewayFor picks the uplink's next hop: the configured gateway, else the
// one a DHCP client (or the admin) put on a foreign default route via the
// interface, else the one uplinkd itself installed earlier if it still lies
// on the interface's subnet (so a restart keeps a gateway whose source route
// is gone).
func gatewayFor(u *Uplink, obs Observed, onLink netip.Prefix) netip.Addr {
	if u.Gateway.IsValid() {
		return u.Gateway
	}
	var own netip.Addr
	for _, r := range obs.Routes {
		if r.Dst.Bits() != 0 || r.IPv6() || len(r.Nexthops) != 1 {
			continue
		}
		nh := r.Nexthops[0]
		if nh.Dev != u.Interface || !nh.Gateway.IsValid() {
			continue
		}
		if r.Protocol != Protocol {
			return nh.Gateway
		}
		if r.Table == u.Table && onLink.Masked().Contains(nh.Gateway) {
			own = nh.Gateway
		}
	}
	return own
}

// gatewayOffSubnet says why the configured gateway gw cannot be used on
// the uplink's link, or "" when it can: it must lie on the subnet of one of
// the interface's addresses and be none of them. A gateway learned from
// the kernel (a DHCP client's route) is already known to work.
func gatewayOffSubnet(u *Uplink, gw netip.Addr, addrs []Addr) string {
	if !u.Gateway.IsValid() || gw != u.Gateway {
		return ""
	}
	for _, a := range addrs {
		if a.Prefix.Addr() == gw {
			return fmt.Sprintf("gateway %s is the interface's own address", gw)
		}
	}
	for _, a := range addrs {
		if a.Prefix.Masked().Contains(gw) {
			return ""
		}
	}
	return fmt.Sprintf("gateway %s is not on %s's subnet %s", gw, u.Interface, addrs[0].Prefix.Masked())
}

func tableRoutes(u *Uplink, st UplinkState) []Route {
	if !st.Gateway.IsValid() {
		if st.Peer.IsValid() || u.PointToPoint() {
			return []Route{{Table: u.Table, Dst: defaultRoute, Protocol: Protocol, ScopeLink: true,
				Nexthops: []Nexthop{{Dev: u.Interface}}}}
		}
		return nil
	}
	return []Route{
		{Table: u.Table, Dst: netip.PrefixFrom(st.Gateway, 32), Protocol: Protocol, ScopeLink: true,
			Nexthops: []Nexthop{{Dev: u.Interface}}},
		{Table: u.Table, Dst: defaultRoute, Protocol: Protocol,
			Nexthops: []Nexthop{{Gateway: st.Gateway, Dev: u.Interface}}},
	}
}

// defaultRouteOf is the default route of uplinkd's default table over the
// usable uplinks of the best (lowest) tier, weighted. Marks st.Active on the chosen uplinks.
// When no uplink is usable and last_resort is "link", the uplinks whose only
// fault is failing probes carry it: probes can be wrong (a probe target
// down), and a doubtful route beats none.
//
// A drained uplink is never picked, not even as the last resort: draining is
// the administrator's word, and health cannot overrule it.
func defaultRouteOf(cfg *Config, states []UplinkState) (Route, bool) {
	pick := func(st UplinkState) bool { return st.Usable && !st.Drained }
	// A degraded uplink whose check says "leave" is picked only when no
	// uplink that is neither degraded nor drained is usable: a line with
	// loss beats none.
	leaving := func(st UplinkState) bool {
		u := cfg.UplinkByName(st.Name)
		return st.Degraded && u != nil && u.Check != nil && u.Check.Degraded == DegradedLeave
	}
	usable := pick
	if healthy := func(st UplinkState) bool { return usable(st) && !leaving(st) }; bestTier(cfg, states, healthy) != 0 {
		pick = healthy
	}
	best := bestTier(cfg, states, pick)
	if best == 0 && cfg.Daemon.LastResort != LastResortNone {
		pick = func(st UplinkState) bool { return st.Reason == reasonProbesFailing && !st.Drained }
		if best = bestTier(cfg, states, pick); best != 0 {
			for i := range states {
				if pick(states[i]) && cfg.Uplinks[i].Tier == best {
					states[i].Reason = "last resort: probes fail on every uplink"
				}
			}
			pick = func(st UplinkState) bool { return strings.HasPrefix(st.Reason, "last resort") }
		}
	}
	if best == 0 {
		return Route{}, false
	}
	r := Route{Table: cfg.Daemon.DefaultTable, Dst: defaultRoute, Protocol: Protocol}
	var chosen []int
	for i := range states {
		u := &cfg.Uplinks[i]
		if !pick(states[i]) || u.Tier != best {
			continue
		}
		states[i].Active = true
		chosen = append(chosen, i)
		r.Nexthops = append(r.Nexthops, Nexthop{Gateway: states[i].Gateway, Dev: u.Interface, Weight: u.Weight})
	}
	lowerDegradedWeights(cfg, states, chosen, r.Nexthops)
	// Same scope as `ip route add default dev ppp0` gives a gateway-less
	// single path, so an admin's hand-made route and ours compare equal.
	r.ScopeLink = len(r.Nexthops) == 1 && !r.Nexthops[0].Gateway.IsValid()
	return r, true
}

// lowerDegradedWeights gives each degraded next hop with degraded =
// "lower-weight" degraded_weight percent of its weight, relative to the
// others. Kernel weights are whole numbers 1..256, so every weight is
// scaled by the largest factor that keeps them in range (at most 100, the
// percent's denominator), and a degraded one gets its share of that,
// rounded, at least 1. Nothing changes when no next hop or every next hop
// is degraded: the shares between them stay what the weights say.
func lowerDegradedWeights(cfg *Config, states []UplinkState, chosen []int, hops []Nexthop) {
	var degraded, maxW int
	for k, i := range chosen {
		maxW = max(maxW, hops[k].Weight, 1) // 0 means 1
		if c := cfg.Uplinks[i].Check; states[i].Degraded && c != nil && c.Degraded != DegradedLeave {
			degraded++
		}
	}
	if degraded == 0 || degraded == len(chosen) {
		return
	}
	scale := min(100, MaxNexthopWeight/maxW)
	for k, i := range chosen {
		w := max(hops[k].Weight, 1) * scale
		if c := cfg.Uplinks[i].Check; states[i].Degraded && c != nil && c.Degraded != DegradedLeave {
			w = max(1, (w*c.DegradedWeight+50)/100)
		}
		hops[k].Weight = w
	}
}

// bestTier is the lowest tier among the picked uplinks, 0 when none.
func bestTier(cfg *Config, states []UplinkState, pick func(UplinkState) bool) int {
	best := 0
	for i, st := range states {
		if t := cfg.Uplinks[i].Tier; pick(st) && (best == 0 || t < best) {
			best = t
		}
	}
	return best
}

// DrainRefusal says why draining the uplink name on top of drained would
// take away the last default route, or returns nil when it would not. The
// inputs are those of ComputeFrom for the current pass. Draining is refused
// (unless forced) when the default route has an uplink now and would have
// none after, or when every configured uplink would be drained: the box
// would then route nothing out however its uplinks fare later.
func DrainRefusal(cfg *Config, obs Observed, links []UplinkState, health Health, drained Drained, name string) error {
	if drained[name] {
		return nil // already drained: changes nothing
	}
	with := make(Drained, len(drained)+1)
	for n, ok := range drained {
		with[n] = ok
	}
	with[name] = true
	if !slices.ContainsFunc(cfg.Uplinks, func(u Uplink) bool { return !with[u.Name] }) {
		return fmt.Errorf("%s is the last uplink that is not drained: draining it leaves no uplink for the default route", name)
	}
	before := ComputeFrom(cfg, obs, links, health, drained)
	after := ComputeFrom(cfg, obs, links, health, with)
	if before.DefaultRoute() && !after.DefaultRoute() {
		return fmt.Errorf("%s is the last uplink that carries the default route: draining it leaves none", name)
	}
	return nil
}

// DefaultRoute reports whether d routes default traffic through an uplink.
func (d Desired) DefaultRoute() bool {
	return slices.ContainsFunc(d.Uplinks, func(st UplinkState) bool { return st.Active })
}

// SysctlKeys lists the sysctls d sets, for the snapshot to read.
func (d Desired) SysctlKeys() []string {
	keys := make([]string, len(d.Sysctls))
	for i, s := range d.Sysctls {
		keys[i] = s.Key
	}
	return keys
}

// String renders the per-uplink verdicts on one line (sd_notify STATUS=, logs).
func (s UplinkState) String() string {
	state := "down"
	switch {
	case s.Active:
		state = "active"
	case s.Usable && s.Drained:
		state = "drained"
	case s.Usable:
		state = "standby"
	}
	if s.Addr.IsValid() {
		return fmt.Sprintf("%s=%s(%s)", s.Name, state, s.Addr)
	}
	return fmt.Sprintf("%s=%s", s.Name, state)
}
