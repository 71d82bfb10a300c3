package policy

import (
	"net/netip"
	"slices"
)

// The IPv6 side of Compute (docs/ipv6.md): for IPv6 exactly what Compute
// does for IPv4, for the uplinks with ipv6 on, and nothing at all when no
// uplink has it (an IPv4-only config computes what it always did).

// Metric6 is the metric of every IPv6 route uplinkd writes: the kernel's
// default for IPv6 (`ip -6 route add` without a metric gives 1024), so a
// route an admin typed by hand compares equal, and a route in the slot of
// metric 0 is never asked for (the kernel turns 0 into 1024 and the pass
// would never see what it wrote).
const Metric6 = 1024

var defaultRoute6 = netip.MustParsePrefix("::/0")

// Health6Key is the key of an uplink's IPv6 probe verdict in Health: the
// IPv6 side has its own state machine, and an uplink whose IPv6 is broken
// stays up for IPv4 (and the other way round). Uplink names never hold a
// space, so the key cannot be another uplink's name.
func Health6Key(name string) string { return name + " ipv6" }

// IPv6On reports whether some uplink has ipv6 on: only then does uplinkd
// observe and write IPv6 state.
func (c *Config) IPv6On() bool {
	return slices.ContainsFunc(c.Uplinks, func(u Uplink) bool { return u.IPv6 })
}

// compute6 adds the IPv6 rules, routes and sysctls to d, whose Uplinks are
// the IPv4 verdicts of this pass (their IPv6 fields are filled in here).
func compute6(cfg *Config, obs Observed, health Health, d *Desired) {
	if !cfg.IPv6On() {
		return
	}
	n := 0
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if !u.IPv6 {
			continue
		}
		n++
		st, addrs := uplinkState6(u, obs)
		if st.Usable {
			if ok, known := health[Health6Key(u.Name)]; known && !ok {
				st.Usable, st.Reason = false, reasonProbesFailing
			}
		}
		d.Uplinks[i].IPv6 = st
		if len(addrs) == 0 || !d.Uplinks[i].Present {
			continue
		}
		// One rule per usable address: a new prefix gets its rule while the
		// old address is still there, and the old rule goes only when the
		// old address is deprecated or gone (make-before-break).
		for _, a := range addrs {
			d.Rules = append(d.Rules, Rule{IPv6: true, Priority: u.RulePriority, Table: u.Table,
				Src: netip.PrefixFrom(a, 128), Protocol: Protocol})
		}
		if r, ok := tableRoute6(u, obs, st); ok {
			d.Routes = append(d.Routes, r)
		}
	}
	prio, table := cfg.Daemon.DefaultPriority, cfg.Daemon.DefaultTable
	d.Rules = append(d.Rules,
		Rule{IPv6: true, Priority: prio, Table: MainTable, SuppressDefault: true, Protocol: Protocol},
		Rule{IPv6: true, Priority: prio + 1, Table: table, Protocol: Protocol})
	if def, ok := defaultRoute6Of(cfg, d.Uplinks); ok {
		d.Routes = append(d.Routes, def)
	}
	// Sticky balancing for IPv6, as for IPv4 (Compute): the firewall
	// restores the uplink's connection mark into the packet mark of later
	// LAN packets of a connection, and these rules route them by it, so a
	// change of the multipath default does not move (and so break) an
	// open IPv6 connection. Only uplinks whose IPv6 side is usable keep
	// theirs: a failed side's connections are deleted and start over.
	sticky := cfg.Daemon.StickyPriority
	for i, st := range d.Uplinks {
		if cfg.Uplinks[i].IPv6 && st.IPv6.Usable && UplinkMark(i) != 0 {
			d.Rules = append(d.Rules, Rule{IPv6: true, Priority: sticky + i, Table: st.Table,
				Mark: UplinkMark(i), Mask: UplinkMarkMask, Protocol: Protocol})
		}
	}
	if n > 1 {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv6/fib_multipath_hash_policy", Value: "1"})
	}
	computeLAN6(cfg, obs, d)
}

// LinkStates6 is the link-layer verdict on each uplink's IPv6 side, in
// config order (zero for uplinks with ipv6 off), without probe verdicts:
// what the IPv6 health machines are fed before Compute.
func LinkStates6(cfg *Config, obs Observed) []UplinkState6 {
	out := make([]UplinkState6, len(cfg.Uplinks))
	for i := range cfg.Uplinks {
		if cfg.Uplinks[i].IPv6 {
			out[i], _ = uplinkState6(&cfg.Uplinks[i], obs)
		}
	}
	return out
}

// uplinkState6 is the link-layer verdict on an uplink's IPv6 side, and
// its usable global addresses.
func uplinkState6(u *Uplink, obs Observed) (st UplinkState6, addrs []netip.Addr) {
	st.On = true
	link, ok := obs.Links[u.Interface]
	if !ok {
		st.Reason = "interface absent"
		return st, nil
	}
	for _, a := range obs.Addrs6[u.Interface] {
		if a.Usable6() {
			addrs = append(addrs, a.Prefix.Addr())
		}
	}
	if len(addrs) > 0 {
		st.Addr = addrs[0]
	}
	p2p := pointToPoint6(u, obs)
	if !p2p {
		st.Gateway = gateway6For(u, obs)
	}
	switch {
	case !link.Up:
		st.Reason = "interface down"
	case !link.Carrier:
		st.Reason = "no carrier"
	case len(addrs) == 0:
		st.Reason = "no usable IPv6 address"
		if len(obs.Addrs6[u.Interface]) > 0 {
			st.Reason = "no usable IPv6 address (tentative, deprecated or duplicate)"
		}
	case !p2p && !st.Gateway.IsValid():
		st.Reason = "no IPv6 gateway"
	default:
		st.Usable, st.Reason = true, "up"
	}
	return st, addrs
}

// pointToPoint6: a ppp-style link, where the IPv6 default route is
// `default dev D` (IPv6CP gives no router address to route via). A
// configured gateway6 says otherwise.
func pointToPoint6(u *Uplink, obs Observed) bool {
	if u.Gateway6.IsValid() {
		return false
	}
	return u.PointToPoint() || obs.Links[u.Interface].PointToPoint
}

// gateway6For is the configured gateway6, else the next hop of a foreign
// IPv6 default route via the interface (the kernel's `proto ra` route, a
// DHCPv6 client's), else the one uplinkd installed itself earlier, so a
// restart after the RA route expired keeps the router.
func gateway6For(u *Uplink, obs Observed) netip.Addr {
	if u.Gateway6.IsValid() {
		return u.Gateway6
	}
	var own netip.Addr
	for _, r := range obs.Routes {
		if !r.IPv6() || r.Dst.Bits() != 0 {
			continue
		}
		for _, nh := range r.Nexthops {
			if nh.Dev != u.Interface || !nh.Gateway.IsValid() {
				continue
			}
			if r.Protocol != Protocol {
				return nh.Gateway
			}
			if r.Table == u.Table {
				own = nh.Gateway
			}
		}
	}
	return own
}

// tableRoute6 is the IPv6 default route of the uplink's own table.
func tableRoute6(u *Uplink, obs Observed, st UplinkState6) (Route, bool) {
	r := Route{Table: u.Table, Dst: defaultRoute6, Metric: Metric6, Protocol: Protocol}
	switch {
	case st.Gateway.IsValid():
		r.Nexthops = []Nexthop{{Gateway: st.Gateway, Dev: u.Interface}}
	case pointToPoint6(u, obs):
		r.Nexthops = []Nexthop{{Dev: u.Interface}}
	default:
		return Route{}, false
	}
	return r, true
}

// defaultRoute6Of is uplinkd's IPv6 default route over the uplinks whose
// IPv6 is usable, of the best tier among them, weighted (as defaultRouteOf
// for IPv4; the IPv6 tier is chosen on its own, so an uplink whose IPv6
// failed hands IPv6 to the next tier while it keeps IPv4). Marks the
// chosen ones Active.
func defaultRoute6Of(cfg *Config, states []UplinkState) (Route, bool) {
	// A drained uplink (uplinkd drain) leaves the IPv6 default as it
	// leaves the IPv4 one; its own rules and table stay.
	carries := func(st UplinkState) bool { return st.IPv6.Usable && !st.Drained }
	best := 0
	for i, st := range states {
		if t := cfg.Uplinks[i].Tier; carries(st) && (best == 0 || t < best) {
			best = t
		}
	}
	if best == 0 {
		return Route{}, false
	}
	r := Route{Table: cfg.Daemon.DefaultTable, Dst: defaultRoute6, Metric: Metric6, Protocol: Protocol}
	var chosen []int
	for i := range states {
		if carries(states[i]) && cfg.Uplinks[i].Tier == best {
			chosen = append(chosen, i)
		}
	}
	// The kernel refuses an IPv6 multipath route with a device-only path
	// ("Device only routes can not be added for IPv6 using the multipath
	// API"): with such an uplink among several, the heaviest one (the
	// first in the file on a tie) carries IPv6 alone, the others stand by.
	if len(chosen) > 1 && slices.ContainsFunc(chosen, func(i int) bool { return !states[i].IPv6.Gateway.IsValid() }) {
		heaviest := chosen[0]
		for _, i := range chosen[1:] {
			if cfg.Uplinks[i].Weight > cfg.Uplinks[heaviest].Weight {
				heaviest = i
			}
		}
		chosen = []int{heaviest}
	}
	for _, i := range chosen {
		states[i].IPv6.Active = true
		r.Nexthops = append(r.Nexthops, Nexthop{Gateway: states[i].IPv6.Gateway, Dev: cfg.Uplinks[i].Interface, Weight: cfg.Uplinks[i].Weight})
	}
	return r, true
}
