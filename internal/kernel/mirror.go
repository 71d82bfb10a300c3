package kernel

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// mirror is the in-memory copy of the kernel state uplinkd reads. It is
// filled by a dump and kept current by the notifications the watcher reads
// (update), by uplinkd's own successful writes (the write-through methods),
// and by the model of what the kernel removes without telling anyone
// (flushDev, flushPrefsrc).
type mirror struct {
	mu sync.Mutex
	// stale: the mirror may have missed changes (never dumped, overflow, a
	// write failed); the next snapshot dumps first.
	stale bool
	err   error // the last message that could not be decoded (tests, logs)
	dumps uint64

	links  map[int32]*mlink
	addrs  map[int32][]maddr // IPv4, per ifindex, in the kernel's list order
	addrs6 map[int32][]maddr // IPv6, per ifindex (only while v6)
	routes map[rkey][]*mroute
	rules  []*mrule

	// v6: IPv6 addresses and foreign IPv6 routes and rules are kept (some
	// uplink has ipv6 on). Off, only uplinkd's own IPv6 routes and rules
	// are (so what an earlier run with ipv6 on wrote is found and removed),
	// and the IPv6 notifications the watcher always receives are dropped
	// on the way in.
	v6 bool

	// history is the link history this mirror writes (linklog): one record
	// per transition a notification makes, a Gap per link at every load.
	history *linklog.History
	// loading: a dump is being applied; its parts are state, not history.
	loading bool
	// dead: ifindexes the last load found deleted. Their notifications
	// still queued on the watcher's socket are older than the dump.
	dead map[int32]bool

	// Writes of uplinkd's whose notifications have not arrived yet. The
	// mirror applied each write when it was made; its notification, which
	// may come after later writes of the same object (delete, add again,
	// then the delete's notification), changes nothing and is consumed.
	ruleEchoes  map[string]int // "+id" adds, "-id" deletes
	routeEchoes []routeEcho

	// tables whose routes are all kept (main and the uplinks' tables).
	// Routes of other tables are kept only if they are default routes or
	// carry uplinkd's protocol.
	tables map[uint32]bool
}

func newMirror() *mirror {
	m := &mirror{stale: true, history: linklog.New(linklog.DefaultCapacity), tables: map[uint32]bool{unix.RT_TABLE_MAIN: true}}
	m.reset()
	return m
}

func (m *mirror) reset() {
	m.links = map[int32]*mlink{}
	m.addrs = map[int32][]maddr{}
	m.addrs6 = map[int32][]maddr{}
	m.routes = map[rkey][]*mroute{}
	m.rules = nil
	// A dump shows the kernel as it is: echoes still on their way would
	// only be matched against it wrongly.
	m.ruleEchoes = map[string]int{}
	m.routeEchoes = nil
}

// routeEcho is the notification a route write of uplinkd's will cause.
type routeEcho struct {
	del bool
	r   *mroute
}

// maxRouteEchoes bounds the expected notifications kept: one that never
// matches (a kernel that words a route differently) must not pile up.
const maxRouteEchoes = 256

func (m *mirror) expectRoute(del bool, r *mroute) {
	if len(m.routeEchoes) >= maxRouteEchoes {
		m.routeEchoes = slices.Delete(m.routeEchoes, 0, 1)
	}
	m.routeEchoes = append(m.routeEchoes, routeEcho{del: del, r: r})
}

// ownRouteEcho consumes the expected notification r is, if it is one.
func (m *mirror) ownRouteEcho(del bool, r *mroute) bool {
	i := slices.IndexFunc(m.routeEchoes, func(e routeEcho) bool { return e.del == del && e.r.equal(r) })
	if i < 0 {
		return false
	}
	m.routeEchoes = slices.Delete(m.routeEchoes, i, i+1)
	return true
}

// awaitingAdd: uplinkd added or replaced r and its notification has not
// arrived yet.
func (m *mirror) awaitingAdd(r *mroute) bool {
	return slices.ContainsFunc(m.routeEchoes, func(e routeEcho) bool { return !e.del && e.r.equal(r) })
}

// ownRuleEcho consumes the expected notification of a rule add ("+") or
// delete ("-"), if r's is one.
func (m *mirror) ownRuleEcho(op string, r *mrule) bool {
	k := op + r.id()
	if m.ruleEchoes[k] == 0 {
		return false
	}
	if m.ruleEchoes[k]--; m.ruleEchoes[k] == 0 {
		delete(m.ruleEchoes, k)
	}
	return true
}

// keepRoute is the cheap filter: header fields and the table only.
func (m *mirror) keepRoute(h routeHeader, table uint32) bool {
	switch {
	case table == unix.RT_TABLE_LOCAL || h.family != unix.AF_INET && h.family != unix.AF_INET6:
		return false
	case h.family == unix.AF_INET6 && !m.v6:
		return h.proto == policy.Protocol
	}
	return m.tables[table] || h.dstLen == 0 || h.proto == policy.Protocol
}

// update applies one rtnetlink message (a notification or a dump part).
// Messages it does not understand are ignored; a malformed one marks the
// mirror stale, so the next snapshot dumps. The effect: see apply; a stale
// mirror says Changed of everything, since its next snapshot dumps and may
// find more than the message told.
func (m *mirror) update(msg netlink.Message) watcher.Effect {
	effect, err := m.apply(msg.Header.Type, msg.Header.Flags, msg.Data)
	if err != nil {
		m.stale, m.err = true, err
	}
	if m.stale {
		return watcher.Changed
	}
	return effect
}

// apply applies one message to the mirror and says what it did: Echo for
// the expected notification of a route or rule write of uplinkd's own (see
// addRouteWritten and the like), which the mirror holds already; Unchanged
// for a message that changes nothing the mirror keeps (so no snapshot
// could differ from the one before it); Changed otherwise.
func (m *mirror) apply(typ netlink.HeaderType, flags netlink.HeaderFlags, b []byte) (watcher.Effect, error) {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		l, ok, err := decodeLink(b)
		if !ok {
			return watcher.Changed, err
		}
		if typ == unix.RTM_DELLINK {
			return changed(m.delLink(l.index)), nil
		}
		return changed(m.setLink(l)), nil
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		a, ok, err := decodeAddr(b)
		if !ok {
			return watcher.Changed, err
		}
		if a.local.Is6() {
			if !m.v6 {
				return watcher.Unchanged, nil
			}
			return changed(m.setAddr6(a, typ == unix.RTM_DELADDR)), nil
		}
		if typ == unix.RTM_DELADDR {
			return changed(m.delAddr(a)), nil
		}
		return changed(m.setAddr(a)), nil
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		h, err := decodeRouteHeader(b)
		if err != nil {
			return watcher.Changed, err
		}
		table := routeTable(b, h)
		if !m.keepRoute(h, table) || h.flags&unix.RTM_F_CLONED != 0 {
			return watcher.Unchanged, nil
		}
		r, err := decodeRoute(b, h, table)
		if err != nil {
			return watcher.Changed, err
		}
		switch {
		case m.ownRouteEcho(typ == unix.RTM_DELROUTE, &r):
			// The notification of uplinkd's own write, applied already.
			return watcher.Echo, nil
		case typ == unix.RTM_DELROUTE:
			return changed(m.delRoute(&r)), nil
		case h.typ != unix.RTN_UNICAST:
			// Only unicast routes are kept; a replace by a blackhole (say)
			// still removes the unicast route it replaced.
			if flags&netlink.Replace != 0 {
				return changed(m.removeFirst(r.key)), nil
			}
			return watcher.Unchanged, nil
		default:
			return changed(m.addRoute(&r, flags&netlink.Replace != 0)), nil
		}
	case unix.RTM_NEWNETCONF:
		// No event comes of it (the watcher does not decode netconf), so
		// what it says of the effect reaches nobody.
		index, rp, ok, err := decodeNetconf(b)
		if !ok {
			return watcher.Changed, err
		}
		if l := m.links[index]; l != nil {
			l.rpFilter = rp
		}
	case unix.RTM_NEWRULE, unix.RTM_DELRULE:
		r, ok, err := decodeRule(b)
		if !ok {
			return watcher.Changed, err
		}
		if r.v6 && !m.v6 && r.proto != policy.Protocol {
			return watcher.Unchanged, nil
		}
		op := "+"
		if typ == unix.RTM_DELRULE {
			op = "-"
		}
		switch {
		case m.ownRuleEcho(op, &r):
			// The notification of uplinkd's own write, applied already.
			return watcher.Echo, nil
		case op == "-":
			return changed(m.delRule(&r)), nil
		default:
			m.addRule(&r)
		}
	}
	return watcher.Changed, nil
}

// changed is the effect of a mirror method that reports whether it changed
// anything.
func changed(did bool) watcher.Effect {
	if did {
		return watcher.Changed
	}
	return watcher.Unchanged
}

// record appends a history record for a notification (never for the parts
// of a dump: load writes the Gap records).
func (m *mirror) record(r linklog.Record) {
	if !m.loading {
		m.history.Append(r)
	}
}

// olderThanMirror reports whether a link notification is older than what the mirror
// holds: it names an ifindex the last dump found deleted, or it carries
// carrier counters the kernel has since moved past. After a dump (taken on
// another socket) the watcher's socket may still hold the notifications of
// changes the dump already shows; applying them again would replay a
// down/up the link went through before the dump, as if it happened after.
func (m *mirror) olderThanMirror(old *mlink, l *mlink) bool {
	if old == nil {
		return m.dead[l.index]
	}
	return l.carrierChanges < old.carrierChanges
}

// setLink applies a link message and reports whether the mirror changed.
func (m *mirror) setLink(l mlink) bool {
	old := m.links[l.index]
	if m.olderThanMirror(old, &l) || old != nil && *old == l {
		return false
	}
	rec := linklog.Record{Name: l.name, Index: int(l.index)}
	switch {
	case old == nil:
		rec.Kind = linklog.Appeared
		m.record(rec)
		if l.upAndCarrier() {
			rec.Kind = linklog.Up
			m.record(rec)
		}
	default:
		if old.name != l.name {
			rec.Kind, rec.OldName = linklog.Renamed, old.name
			m.record(rec)
			rec.OldName = ""
		}
		// The kernel's carrier_down_count may have moved by more than this
		// message shows: linkwatch sends one message for a carrier that
		// went off and on again before it ran, and an overflow loses
		// messages whose successor still arrives. Those downs happened.
		wasUp, isUp := old.upAndCarrier(), l.upAndCarrier()
		downs := 0
		if old.hasCarrierDown && l.hasCarrierDown && l.carrierDowns > old.carrierDowns {
			downs = int(min(l.carrierDowns-old.carrierDowns, 1000))
		}
		switch {
		case wasUp && !isUp:
			rec.Kind, rec.Downs = linklog.Down, max(downs, 1)
			m.record(rec)
		case downs > 0:
			// Unseen down/up cycles: told like a gap, by the counter.
			rec.Kind, rec.Downs = linklog.Gap, downs
			m.record(rec)
			rec.Downs = 0
		}
		if !wasUp && isUp {
			rec.Kind = linklog.Up
			m.record(rec)
		}
		if old.flags&unix.IFF_UP != 0 && l.flags&unix.IFF_UP == 0 {
			// NETDEV_DOWN: fib_sync_down_dev + fib_flush, no RTM_DELROUTE.
			m.flushDev(l.index, false)
		}
	}
	m.links[l.index] = &l
	return true
}

// delLink applies a link deletion and reports whether the mirror changed.
func (m *mirror) delLink(index int32) bool {
	old := m.links[index]
	if old == nil {
		delete(m.dead, index) // the deletion the last dump already showed
		return false
	}
	rec := linklog.Record{Kind: linklog.Gone, Name: old.name, Index: int(index)}
	if old.upAndCarrier() {
		rec.Downs = 1 // deleted while up: a down the loop must hear of
	}
	m.record(rec)
	delete(m.links, index)
	delete(m.addrs, index)
	delete(m.addrs6, index)
	// NETDEV_UNREGISTER: every route with a nexthop on the device goes.
	m.flushDev(index, true)
	return true
}

// flushDev models fib_sync_down_dev followed by fib_flush: a route goes when
// all its nexthops are on the device (link down, last address removed) or
// when any is (device unregistered). A multipath route that keeps a live
// nexthop stays, its dead one flagged (which the mirror does not keep).
//
// A route uplinkd wrote whose notification has not arrived yet is newer than
// the link message being applied (one socket delivers the kernel's messages
// in the order it sent them): the flush came before the write and the route
// is there. A link that bounces between two passes is exactly this case.
func (m *mirror) flushDev(index int32, any bool) {
	m.flushDevFamily(index, any, true)
}

// flushDevFamily is flushDev for IPv4 routes only (v6: for both): an IPv4
// device losing its last IPv4 address keeps its IPv6 routes.
func (m *mirror) flushDevFamily(index int32, any, v6 bool) {
	for k, rs := range m.routes {
		if !v6 && k.dst.Addr().Is6() {
			continue
		}
		if any && k.dst.Addr().Is6() {
			// An IPv6 multipath route is a set of sibling routes: an
			// unregistered device takes its own paths, the rest stay.
			for i, r := range rs {
				if r.via(index) && !m.awaitingAdd(r) {
					c := *r
					c.nhs = slices.DeleteFunc(slices.Clone(r.nhs), func(nh mnexthop) bool { return nh.oif == index })
					if len(c.nhs) == 1 {
						c.nhs[0].hops = 0
					}
					rs[i] = &c
				}
			}
			m.setSlot(k, slices.DeleteFunc(rs, func(r *mroute) bool { return len(r.nhs) == 0 }))
			continue
		}
		rs = slices.DeleteFunc(rs, func(r *mroute) bool {
			if m.awaitingAdd(r) {
				return false
			}
			if any {
				return r.via(index)
			}
			return !slices.ContainsFunc(r.nhs, func(nh mnexthop) bool { return nh.oif != index })
		})
		m.setSlot(k, rs)
	}
}

// flushPrefsrc models fib_sync_down_addr: when an address is gone from a
// device, main-table routes that use it as preferred source go.
func (m *mirror) flushPrefsrc(local netip.Addr) {
	for k, rs := range m.routes {
		if k.table != unix.RT_TABLE_MAIN {
			continue
		}
		m.setSlot(k, slices.DeleteFunc(rs, func(r *mroute) bool { return r.prefsrc == local && !m.awaitingAdd(r) }))
	}
}

func (m *mirror) setSlot(k rkey, rs []*mroute) {
	if len(rs) == 0 {
		delete(m.routes, k)
	} else {
		m.routes[k] = rs
	}
}

// setAddr applies an IPv4 address message and reports whether the mirror
// changed.
func (m *mirror) setAddr(a maddr) bool {
	list := m.addrs[a.index]
	i := slices.IndexFunc(list, a.same)
	if i < 0 {
		m.recordAddr(linklog.AddrAdded, a)
	}
	if i >= 0 {
		if list[i] == a {
			return false
		}
		promoted := list[i].secondary() && !a.secondary()
		list[i] = a
		if !promoted {
			return true
		}
		list = slices.Delete(list, i, i+1)
	}
	// The kernel's list order: primaries first, each kind in the order added.
	if a.secondary() {
		list = append(list, a)
	} else {
		i := slices.IndexFunc(list, maddr.secondary)
		if i < 0 {
			i = len(list)
		}
		list = slices.Insert(list, i, a)
	}
	m.addrs[a.index] = list
	return true
}

// delAddr applies an IPv4 address deletion and reports whether the mirror
// changed.
func (m *mirror) delAddr(a maddr) bool {
	list := m.addrs[a.index]
	i := slices.IndexFunc(list, a.same)
	if i < 0 {
		return false
	}
	m.recordAddr(linklog.AddrRemoved, a)
	list = slices.Delete(list, i, i+1)
	m.addrs[a.index] = list
	if !m.isLocal(a.local) {
		m.flushPrefsrc(a.local)
	}
	if len(list) == 0 {
		// fib_inetaddr_event: the last IPv4 address went, IP is disabled
		// on the device (fib_disable_ip with force).
		delete(m.addrs, a.index)
		m.flushDevFamily(a.index, false, false)
	}
	return true
}

// setAddr6 adds, updates (its flags: DAD done, deprecated) or removes an
// IPv6 address. Unlike IPv4, the kernel announces the routes an IPv6
// address takes with it, so nothing is flushed here. It reports whether
// the mirror changed.
func (m *mirror) setAddr6(a maddr, del bool) bool {
	list := m.addrs6[a.index]
	i := slices.IndexFunc(list, a.same)
	switch {
	case del && i >= 0:
		m.recordAddr(linklog.AddrRemoved, a)
		list = slices.Delete(list, i, i+1)
	case del, i >= 0 && list[i] == a:
		return false
	case i >= 0:
		list[i] = a
	default:
		m.recordAddr(linklog.AddrAdded, a)
		list = append(list, a)
	}
	if len(list) == 0 {
		delete(m.addrs6, a.index)
	} else {
		m.addrs6[a.index] = list
	}
	return true
}

func (m *mirror) recordAddr(kind linklog.Kind, a maddr) {
	if m.loading {
		return
	}
	name := ""
	if l := m.links[a.index]; l != nil {
		name = l.name
	}
	m.record(linklog.Record{Kind: kind, Name: name, Index: int(a.index), Addr: netip.PrefixFrom(a.local, int(a.bits))})
}

// isLocal: the address is still configured on some link (fib_del_ifaddr
// flushes its source routes only once it is not local anymore).
func (m *mirror) isLocal(a netip.Addr) bool {
	for _, list := range m.addrs {
		if slices.ContainsFunc(list, func(o maddr) bool { return o.local == a }) {
			return true
		}
	}
	return false
}

// addRoute adds or replaces a route and reports whether the mirror
// changed.
func (m *mirror) addRoute(r *mroute, replace bool) bool {
	rs := m.routes[r.key]
	if slices.ContainsFunc(rs, r.equal) {
		return false // the notification of what the mirror already has
	}
	if replace && len(rs) > 0 {
		rs[0] = r // NLM_F_REPLACE replaces the slot's first route
		return true
	}
	m.routes[r.key] = append(rs, r)
	return true
}

// delRoute deletes a route and reports whether the mirror had it.
func (m *mirror) delRoute(r *mroute) bool {
	rs := m.routes[r.key]
	i := slices.IndexFunc(rs, r.equal)
	if i < 0 {
		return false
	}
	m.setSlot(r.key, slices.Delete(rs, i, i+1))
	return true
}

// removeFirst deletes the first route of a slot and reports whether there
// was one.
func (m *mirror) removeFirst(k rkey) bool {
	rs := m.routes[k]
	if len(rs) == 0 {
		return false
	}
	m.setSlot(k, rs[1:])
	return true
}

func (m *mirror) addRule(r *mrule) {
	id := r.id()
	for _, o := range m.rules {
		if o.pending && o.id() == id {
			o.pending = false // its notification
			return
		}
	}
	m.rules = append(m.rules, r)
}

// addRuleWritten records a rule uplinkd added (echo: its notification is
// to come) or found there (EEXIST: no notification).
func (m *mirror) addRuleWritten(r *mrule, echo bool) {
	id := r.id()
	if echo {
		m.ruleEchoes["+"+id]++
	}
	if slices.ContainsFunc(m.rules, func(o *mrule) bool { return o.id() == id }) {
		return
	}
	m.rules = append(m.rules, r)
}

// addRouteWritten records a route uplinkd added or replaced; its
// notification is to come.
func (m *mirror) addRouteWritten(r *mroute, replace bool) {
	m.addRoute(r, replace)
	m.expectRoute(false, r)
}

// delRouteWritten records a route uplinkd deleted: the identical one, or
// else the first of the slot with the same protocol (the kernel deleted the
// first that matched the request); echo: its notification is to come.
func (m *mirror) delRouteWritten(r *mroute, echo bool) {
	rs := m.routes[r.key]
	i := slices.IndexFunc(rs, r.equal)
	if i < 0 {
		i = slices.IndexFunc(rs, func(o *mroute) bool { return o.proto == r.proto })
	}
	if i >= 0 {
		if echo {
			m.expectRoute(true, rs[i])
		}
		m.setSlot(r.key, slices.Delete(rs, i, i+1))
	}
}

// delRuleWritten records a rule uplinkd deleted, and (echo) that its
// notification is to come.
func (m *mirror) delRuleWritten(r *mrule, echo bool) {
	m.delRule(r)
	if echo {
		m.ruleEchoes["-"+r.id()]++
	}
}

// delRule deletes a rule and reports whether the mirror had it.
func (m *mirror) delRule(r *mrule) bool {
	id := r.id()
	i := slices.IndexFunc(m.rules, func(o *mrule) bool { return o.id() == id })
	if i < 0 {
		return false
	}
	m.rules = slices.Delete(m.rules, i, i+1)
	return true
}

// snapshot builds the policy view. Everything is copied: the caller owns it.
func (m *mirror) snapshot() policy.Observed {
	obs := policy.Observed{Links: make(map[string]policy.Link, len(m.links)), Addrs: map[string][]policy.Addr{},
		LinkSeq: m.history.Last()}
	names := make(map[int32]string, len(m.links))
	for _, l := range m.links {
		names[l.index] = l.name
		obs.Links[l.name] = policy.Link{
			Index:        int(l.index),
			Name:         l.name,
			Up:           l.flags&unix.IFF_UP != 0,
			Carrier:      l.flags&unix.IFF_LOWER_UP != 0,
			PointToPoint: l.flags&unix.IFF_POINTOPOINT != 0,
		}
	}
	for index, list := range m.addrs {
		name := names[index]
		if name == "" {
			continue
		}
		var out []policy.Addr
		for _, a := range list {
			if a.scope != unix.RT_SCOPE_UNIVERSE {
				continue
			}
			pa := policy.Addr{Prefix: netip.PrefixFrom(a.local, int(a.bits)), Peer: a.peer}
			// As the dump-based reading had it: each primary ahead of what
			// came before it, secondaries behind.
			if a.secondary() {
				out = append(out, pa)
			} else {
				out = append([]policy.Addr{pa}, out...)
			}
		}
		if len(out) > 0 {
			obs.Addrs[name] = out
		}
	}
	if m.v6 {
		obs.Addrs6 = m.snapshotAddrs6(names)
	}
	// In a stable order, as a dump gives them: whoever picks "the first"
	// route of a kind (gateway learning) must not flip between passes.
	keys := make([]rkey, 0, len(m.routes))
	for k := range m.routes {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b rkey) int {
		return cmp.Or(cmp.Compare(a.table, b.table), a.dst.Addr().Compare(b.dst.Addr()),
			cmp.Compare(a.dst.Bits(), b.dst.Bits()), cmp.Compare(a.tos, b.tos), cmp.Compare(a.metric, b.metric))
	})
	for _, k := range keys {
		for _, r := range m.routes[k] {
			obs.Routes = append(obs.Routes, r.policy(names))
		}
	}
	// The kernel's rule order: by priority, then in the order added.
	rules := slices.Clone(m.rules)
	slices.SortStableFunc(rules, func(a, b *mrule) int { return cmp.Compare(a.prio, b.prio) })
	for _, r := range rules {
		obs.Rules = append(obs.Rules, policy.Rule{IPv6: r.v6, Priority: int(r.prio), Table: int(r.table), Src: r.src, Mark: r.mark,
			Mask: r.mask, Protocol: int(r.proto), SuppressDefault: r.suppress, Extra: r.extra})
	}
	return obs
}

// snapshotAddrs6 is the policy view of the IPv6 addresses: global and
// link-local ones (not ::1), with the states that make them unusable.
func (m *mirror) snapshotAddrs6(names map[int32]string) map[string][]policy.Addr {
	out := map[string][]policy.Addr{}
	for index, list := range m.addrs6 {
		name := names[index]
		if name == "" {
			continue
		}
		for _, a := range list {
			if a.scope == unix.RT_SCOPE_HOST {
				continue
			}
			pa := policy.Addr{Prefix: netip.PrefixFrom(a.local, int(a.bits)), Peer: a.peer}
			if a.flags&unix.IFA_F_TENTATIVE != 0 {
				pa.Flags |= policy.AddrTentative
			}
			if a.flags&unix.IFA_F_DEPRECATED != 0 {
				pa.Flags |= policy.AddrDeprecated
			}
			if a.flags&unix.IFA_F_DADFAILED != 0 {
				pa.Flags |= policy.AddrDADFailed
			}
			out[name] = append(out[name], pa)
		}
	}
	return out
}

func (r *mroute) policy(names map[int32]string) policy.Route {
	out := policy.Route{Table: int(r.key.table), Dst: r.key.dst, Metric: int(r.key.metric), Protocol: int(r.proto),
		ScopeLink: r.scope == unix.RT_SCOPE_LINK, Nexthops: make([]policy.Nexthop, len(r.nhs))}
	for i, nh := range r.nhs {
		out.Nexthops[i] = policy.Nexthop{Gateway: nh.gw, Dev: names[nh.oif], Weight: int(nh.hops) + 1}
	}
	if len(out.Nexthops) == 1 {
		out.Nexthops[0].Weight = 1
	}
	return out
}

// load replaces the mirror's content with a dump: links, addresses, routes,
// rules, in that order (routes refer to links; the order matters for
// nothing else). The link history gets a Gap record for every link name
// before or after it (gap).
func (m *mirror) load(dump func(typ netlink.HeaderType, family uint8) ([]netlink.Message, error)) error {
	oldLinks := m.links
	m.reset()
	m.dumps++
	m.loading = true
	defer func() { m.loading = false }()
	type query struct {
		typ    netlink.HeaderType
		family uint8
	}
	queries := []query{{unix.RTM_GETLINK, unix.AF_UNSPEC}, {unix.RTM_GETADDR, unix.AF_INET}, {unix.RTM_GETROUTE, unix.AF_INET}, {unix.RTM_GETRULE, unix.AF_INET},
		{unix.RTM_GETROUTE, unix.AF_INET6}, {unix.RTM_GETRULE, unix.AF_INET6}}
	if m.v6 {
		queries = append(queries, query{unix.RTM_GETADDR, unix.AF_INET6})
	}
	for _, q := range queries {
		msgs, err := dump(q.typ, q.family)
		if err != nil {
			m.stale = true
			return fmt.Errorf("dump %s: %w", dumpName(q.typ), err)
		}
		for _, msg := range msgs {
			// Dump parts carry the NEW type of their object.
			if _, err := m.apply(msg.Header.Type, 0, msg.Data); err != nil {
				m.stale = true
				return fmt.Errorf("dump %s: %w", dumpName(q.typ), err)
			}
		}
	}
	for _, r := range m.rules {
		r.pending = true // a queued NEWRULE of it is not a second copy
	}
	m.gap(oldLinks)
	m.stale = false
	return nil
}

// gap writes one Gap record per link name the mirror held before the dump
// or holds after it, and remembers which ifindexes the dump found deleted.
// Across a gap nothing is replayed: states are compared. A link whose
// ifindex is the same on both sides went down as often as the kernel's
// carrier_down_count grew (one more if it lost IFF_UP, which the counter
// does not see); a link that was up and is now gone, or has another
// ifindex, was deleted: one down.
func (m *mirror) gap(oldLinks map[int32]*mlink) {
	m.dead = map[int32]bool{}
	names := map[string]bool{}
	for index, old := range oldLinks {
		names[old.name] = true
		if m.links[index] == nil {
			m.dead[index] = true
		}
	}
	for _, l := range m.links {
		names[l.name] = true
	}
	byName := make(map[string]*mlink, len(oldLinks))
	for _, l := range oldLinks {
		byName[l.name] = l
	}
	sorted := slices.Sorted(maps.Keys(names))
	for _, name := range sorted {
		old, now := byName[name], m.linkByName(name)
		rec := linklog.Record{Kind: linklog.Gap, Name: name}
		if now != nil {
			rec.Index = int(now.index)
		}
		switch {
		case old == nil:
		case now == nil || now.index != old.index:
			if old.upAndCarrier() {
				rec.Downs = 1
			}
		default:
			if old.hasCarrierDown && now.hasCarrierDown && now.carrierDowns > old.carrierDowns {
				rec.Downs = int(min(now.carrierDowns-old.carrierDowns, 1000))
			}
			if rec.Downs == 0 && old.upAndCarrier() && !now.upAndCarrier() {
				rec.Downs = 1 // IFF_UP lost (or no counters to read)
			}
		}
		m.history.Append(rec)
	}
}

func (m *mirror) linkByName(name string) *mlink {
	for _, l := range m.links {
		if l.name == name {
			return l
		}
	}
	return nil
}

func dumpName(t netlink.HeaderType) string {
	switch t {
	case unix.RTM_GETLINK:
		return "links"
	case unix.RTM_GETADDR:
		return "addresses"
	case unix.RTM_GETROUTE:
		return "routes"
	}
	return "rules"
}
