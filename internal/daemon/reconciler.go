package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
)

// reconciler is one reconcile pass and the state passes hand to each other:
// snapshot → compute → diff → apply, the kube-proxy proxier's syncProxyRules.
// It is owned by the loop's goroutine (Run calls pass; nothing else touches
// its fields). What it needs from the rest of the daemon, the inputs it
// computes from besides the kernel and what follows an apply, it asks
// through passHost.
type reconciler struct {
	log    *slog.Logger
	clock  Clock
	kernel Kernel
	fw     Firewall
	sched  *scheduler // the repair rate limit
	host   passHost
	cfg    *policy.Config // the config of the pass under way

	// lastApplied holds the keys of what the previous successful pass made
	// true, to tell a repair (someone removed our object) from a change.
	lastApplied policy.Applied
	// lastStates: each uplink's state as the last pass saw it (read by the
	// status and the publishers, in the loop's goroutine).
	lastStates map[string]policy.UplinkState
	// conflicts: foreign routes already reported (dropConflicts).
	conflicts map[string]bool
	// linkSeq: the link history record the last pass's snapshot included;
	// the next pass reads what happened after it (kernelDropped).
	linkSeq uint64
	// ownedVia: the single-device routes of the last applied state, per
	// device. The kernel drops them all when the device goes down or loses
	// its last address.
	ownedVia map[string][]policy.RouteID
	// wasActive: which uplinks were in the default route (their gateway's
	// neighbour entry is forgotten when they rejoin it).
	wasActive map[string]bool
	// lostAddr: with [ha], the address an uplink lost, kept until it has
	// one again (flushOnTransition).
	lostAddr map[string]netip.Addr
	ctFlush  []int // indexes of uplinks whose connections must go this pass
	ctFlush6 []int // ... whose IPv6 connections alone must go
}

// passHost is what a pass asks of the rest of the daemon (*Daemon): the
// inputs besides the kernel, in the order the pass needs them, and what
// follows its apply.
type passHost interface {
	// The snapshot: the LAN for the DHCP server, the delegated prefixes
	// (expired ones go first).
	noteLAN(obs policy.Observed)
	expireDelegated(now time.Time) bool
	delegatedPrefixes() map[string][]netip.Prefix
	// Compute's inputs: the health machines fed with this pass's links,
	// the drained and the degraded uplinks; noteComputed keeps what the
	// drain requests compare with.
	feedLinks(links []policy.UplinkState, links6 []policy.UplinkState6, now time.Time) policy.Health
	drainedSet() policy.Drained
	degradedSet() policy.Degraded
	noteComputed(obs policy.Observed, links []policy.UplinkState)
	// The firewall's inputs: the healthy service backends, NPTv6 maps.
	healthyBackends() map[string][]netip.AddrPort
	npt6Maps(obs policy.Observed) []policy.NPT6
	// Transitions: a hook event per uplink, fired after the apply, and
	// the status's last event.
	queueUplinkHook(uplink string, ev hooks.HookEvent)
	noteUplinkEvent(uplink, event string)
	// After the apply: HA's track file and exclusive uplinks, then the
	// probers and reconnectors (afterApply) and the queued hooks.
	haSync(states []policy.UplinkState, now time.Time)
	afterApply(links []policy.UplinkState, links6 []policy.UplinkState6, now time.Time)
	fireHooks()
	// notify sends an sd_notify state (STATUS=...).
	notify(state string)
}

func newReconciler(log *slog.Logger, clock Clock, k Kernel, fw Firewall, sched *scheduler, host passHost) *reconciler {
	return &reconciler{
		log: log, clock: clock, kernel: k, fw: fw, sched: sched, host: host,
		lastStates: map[string]policy.UplinkState{},
		conflicts:  map[string]bool{},
		wasActive:  map[string]bool{},
		lostAddr:   map[string]netip.Addr{},
	}
}

// sync is one reconcile pass: observe → compute → diff → apply.
func (r *reconciler) sync(cfg *policy.Config, trigger time.Time) SyncResult {
	r.cfg = cfg
	res := SyncResult{Trigger: trigger, Start: r.clock.Now()}
	obs, err := r.kernel.Snapshot()
	if err != nil {
		res.Err, res.End = err, r.clock.Now()
		r.log.Error("snapshot failed", "event", "apply", "reason", err.Error())
		return res
	}
	r.host.noteLAN(obs) // for the DHCP server (dhcp.go)
	now := r.clock.Now()
	r.host.expireDelegated(now)
	obs.Delegated = r.host.delegatedPrefixes()
	links := policy.LinkStates(r.cfg, obs)
	links6 := policy.LinkStates6(r.cfg, obs)
	flushed, bounced := r.kernelDropped(links, obs)
	desired := policy.ComputeWith(r.cfg, obs, links, r.host.feedLinks(links, links6, now), r.host.drainedSet(), r.host.degradedSet())
	r.host.noteComputed(obs, links)
	if obs.Sysctls, err = r.kernel.ReadSysctls(desired.SysctlKeys()); err != nil {
		r.log.Warn("reading sysctls", "reason", err.Error())
	}
	res.Desired = desired
	changes := policy.Diff(desired, obs)
	r.logTransitions(desired.Uplinks, bounced)

	changes = r.limitRepairs(r.dropConflicts(changes), flushed, now, &res)
	r.forgetStaleGateways(desired.Uplinks, obs)
	// NAT follows the addresses of this very pass, then the connections
	// bound to an old address or a dead uplink go, so LAN hosts reconnect
	// through what is there now instead of hanging.
	rs := firewall.Compute(firewall.Input{Config: r.cfg, Uplinks: desired.Uplinks, Healthy: r.host.healthyBackends(), NPT6: r.host.npt6Maps(obs)})
	var fwChanged bool
	res.Err, fwChanged, err = r.applyBoth(changes, obs, rs)
	if err != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("firewall: %w", err))
	}
	res.FirewallChanged = fwChanged
	res.ConntrackDeletes = r.flushConntrack()
	r.host.haSync(desired.Uplinks, now) // HA: track file and exclusive uplinks
	res.End = r.clock.Now()
	r.host.afterApply(links, links6, now)
	r.host.fireHooks()
	res.Changes = changes
	r.remember(res, desired, obs)
	if fwChanged {
		r.log.Info("firewall applied", "event", "apply", "backend", r.cfg.Firewall.Backend)
	}
	if len(changes) > 0 {
		r.logApplied(res, trigger, changes)
		r.host.notify("STATUS=" + statusLine(desired.Uplinks))
	}
	return res
}

// limitRepairs tells the pass's repairs from its changes and holds the
// repairs back when the repair rate limit is out of tokens (res.Deferred).
// A repair undoes someone else; what the kernel dropped by itself (its link
// is down, bounced or lost its last address) comes back at once and outside
// the repair budget, and is no longer counted as ours.
func (r *reconciler) limitRepairs(changes []policy.Change, flushed map[string]bool, now time.Time, res *SyncResult) []policy.Change {
	for dev := range flushed {
		for _, k := range r.ownedVia[dev] {
			delete(r.lastApplied.Routes, k)
		}
	}
	applied := r.lastApplied
	isRepair := func(c policy.Change) bool {
		return policy.IsRepair(c, applied) && !viaAny(c, flushed)
	}
	n := countFunc(changes, isRepair)
	switch {
	case n == 0:
	case r.sched.allowRepair(now):
		res.Repaired = true
		r.log.Warn("undoing a change someone else made to what uplinkd keeps", "event", "apply", "reason", "repair", "repairs", n)
	default:
		// Out of repair tokens: hold the repairs back, but never the rest
		// of the pass (a failover must not wait for a fight).
		res.Deferred = true
		changes = slices.DeleteFunc(changes, isRepair)
		r.log.Warn("someone keeps changing what uplinkd keeps; holding off the repair",
			"event", "apply", "reason", "repair rate limit", "repairs", n)
	}
	return changes
}

// remember keeps what the next pass compares with: where in the link
// history this snapshot was, and what is ours now.
func (r *reconciler) remember(res SyncResult, desired policy.Desired, obs policy.Observed) {
	r.rememberLinks(obs)
	if res.Err == nil && !res.Deferred {
		r.lastApplied = desired.Applied()
		r.ownedVia = ownedVia(desired.Routes)
		return
	}
	// Some changes may not have been made (or repairs were held back):
	// what is still wanted as before stays ours, what this pass removed is
	// not ours any more, and what it added counts once a pass succeeds.
	r.lastApplied.Keep(desired.Applied())
}

// logApplied logs what a pass changed. The `commands` list renders every
// change as text: it is built only when the record's level is enabled (not
// at log_level = "warn"), since the next pass may be waiting.
func (r *reconciler) logApplied(res SyncResult, trigger time.Time, changes []policy.Change) {
	level, msg := slog.LevelInfo, "applied"
	switch {
	case errors.Is(res.Err, kernel.ErrStale):
		msg = "kernel changed during the pass; resyncing"
	case linkNotUp(res.Err):
		msg = "link not up yet; applying again on its link-up event"
	case res.Err != nil:
		level, msg = slog.LevelError, "apply failed (will retry)"
	}
	ctx := context.Background()
	if !r.log.Enabled(ctx, level) {
		return
	}
	cmds := make([]string, len(changes))
	for i, c := range changes {
		cmds[i] = c.Command()
	}
	attrs := []any{"event", "apply", "changes", len(changes), "duration", res.End.Sub(res.Start),
		"latency", res.End.Sub(trigger), "commands", cmds}
	if res.Err != nil {
		attrs = append(attrs, "reason", res.Err.Error())
	}
	r.log.Log(ctx, level, msg, attrs...)
}

// applyBoth makes the routing changes and syncs the firewall. The two do
// not wait for each other: the routing writes go over rtnetlink (under the
// kernel's RTNL lock, which a redialling link holds for a while), the
// firewall transaction over nfnetlink (under nftables' own mutex), and no
// rule, route or NAT rule of one refers to a change the other makes in the
// same pass (marks and chains are fixed by the config; SNAT names the
// address, which the kernel already has, and an snat uplink whose address
// the old ruleset did not know is masqueraded, so a route written before
// the firewall's transaction never sends LAN traffic out without NAT). So
// they run at the same time and the pass waits for the slower instead of
// the sum. Make-before-break stays inside Apply; the conntrack delete
// still comes after both. When one side has nothing to do, both run
// inline: handing a no-op to another goroutine costs more than it saves.
func (r *reconciler) applyBoth(changes []policy.Change, obs policy.Observed, rs firewall.Ruleset) (routeErr error, fwChanged bool, fwErr error) {
	if len(changes) == 0 || r.fw.InSync(rs) {
		if len(changes) > 0 {
			routeErr = r.kernel.Apply(changes, obs)
		}
		fwChanged, fwErr = r.fw.Sync(rs)
		return routeErr, fwChanged, fwErr
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fwChanged, fwErr = r.fw.Sync(rs)
	}()
	routeErr = r.kernel.Apply(changes, obs)
	<-done
	return routeErr, fwChanged, fwErr
}

// kernelDropped tells, per uplink interface, what happened since the last
// pass that the pass itself could not see, from the link history
// (internal/linklog) between the last pass's snapshot and this one:
//
//   - bounced: down/up cycles of the link between the two passes that no
//     pass saw. The history's down transitions (each told once, a gap's
//     counted by the kernel itself) around the state the last pass saw
//     and the one this pass sees.
//   - flushed: the kernel dropped the link's routes by itself (the link is
//     down now, it went down in between, or a link or address record names
//     it and every owned route via it is gone: its last address went).
//     Restoring them is not a repair.
func (r *reconciler) kernelDropped(links []policy.UplinkState, obs policy.Observed) (flushed map[string]bool, bounced map[string]bounce) {
	recs, complete := r.kernel.LinkHistory(r.linkSeq, obs.LinkSeq)
	if !complete {
		r.log.Warn("link history overflowed between two passes; comparing states only",
			"event", "apply", "reason", "link history overflow")
	}
	history := linklog.Summarize(recs)
	have := make(map[policy.RouteID]bool, len(obs.Routes))
	for _, r := range obs.Routes {
		have[r.ID()] = true
	}
	for _, st := range links {
		link, ok := obs.Links[st.Iface]
		if ok && !linkUpNow(link) {
			// The kernel drops every route via a link that is down.
			if flushed == nil {
				flushed = map[string]bool{}
			}
			flushed[st.Iface] = true
		}
		old, seen := r.lastStates[st.Name]
		if !ok || !seen || old.Iface != st.Iface {
			continue
		}
		h := history[st.Iface]
		owned := r.ownedVia[st.Iface]
		gone := len(owned) > 0 && !slices.ContainsFunc(owned, func(k policy.RouteID) bool { return have[k] })
		vanished := gone && (h.Touched || !complete)
		n := min(h.Downs, 1000)
		var b bounce
		switch wasUp, nowUp := linkUp(old), linkUp(st); {
		case n == 0:
		case wasUp && nowUp:
			b.cycles = n // down, up: each time
		case wasUp:
			b.cycles = n - 1 // down, up; the last down is the one this pass sees
		default:
			b = bounce{cycles: n, upFirst: true} // up, down; then maybe the up this pass sees
		}
		if b.cycles > 0 {
			if bounced == nil {
				bounced = map[string]bounce{}
			}
			bounced[st.Iface] = b
		}
		if n > 0 || vanished {
			if flushed == nil {
				flushed = map[string]bool{}
			}
			flushed[st.Iface] = true
		}
	}
	return flushed, bounced
}

func linkUpNow(l policy.Link) bool { return l.Up && l.Carrier }

// bounce is what happened to a link between two passes that neither saw:
// cycles of down then up, or of up then down (upFirst: the last pass saw
// it down).
type bounce struct {
	cycles  int
	upFirst bool
}

// rememberLinks keeps where in the link history this pass's snapshot was.
func (r *reconciler) rememberLinks(obs policy.Observed) {
	r.linkSeq = obs.LinkSeq
}

// ownedVia lists the IDs of the single-device routes per device.
func ownedVia(routes []policy.Route) map[string][]policy.RouteID {
	m := map[string][]policy.RouteID{}
	for _, r := range routes {
		if len(r.Nexthops) == 1 {
			m[r.Nexthops[0].Dev] = append(m[r.Nexthops[0].Dev], r.ID())
		}
	}
	return m
}

// viaAny reports whether a route change goes through one of the devices.
func viaAny(c policy.Change, devs map[string]bool) bool {
	if len(devs) == 0 || (c.Op != policy.OpAddRoute && c.Op != policy.OpReplaceRoute) {
		return false
	}
	return slices.ContainsFunc(c.Route.Nexthops, func(nh policy.Nexthop) bool { return devs[nh.Dev] })
}

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

// dropConflicts removes (and reports once) desired routes whose slot a
// foreign route holds: uplinkd never overwrites state it does not own.
func (r *reconciler) dropConflicts(changes []policy.Change) []policy.Change {
	out := changes[:0]
	for _, c := range changes {
		if c.Op != policy.OpConflict {
			out = append(out, c)
			continue
		}
		if k := c.Route.Key(); !r.conflicts[k] {
			r.conflicts[k] = true
			r.log.Warn("a foreign route holds a slot uplinkd wants; leaving it alone",
				"event", "apply", "reason", "conflict", "wanted", c.Route.IPRoute(), "foreign", c.Old.IPRoute())
		}
	}
	return out
}

// logTransitions emits one structured record per uplink state change.
// Hook events it finds run after the pass has applied its changes. A bounce
// the passes never saw is told as the link-down and link-up it was, with
// their hooks, in the order they happened and before the transition this
// pass sees.
func (r *reconciler) logTransitions(states []policy.UplinkState, bounced map[string]bounce) {
	for _, st := range states {
		old, seen := r.lastStates[st.Name]
		r.lastStates[st.Name] = st
		attrs := []any{"uplink", st.Name, "iface", st.Iface}
		const why = "link bounced between passes"
		linkDown := func() {
			r.log.Info("link down", append(attrs, "event", "link-down", "reason", why)...)
			r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: "link-down", Uplink: st.Name, Iface: st.Iface, Reason: why})
		}
		linkUpAgain := func() {
			r.log.Info("link up", append(attrs, "event", "link-up", "reason", why)...)
			r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: "link-up", Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: why})
		}
		b := bounced[st.Iface]
		for range b.cycles {
			if b.upFirst {
				linkUpAgain()
				linkDown()
				continue
			}
			linkDown()
			// A usable uplink was out of service for the moment too.
			if old.Usable && st.Usable {
				r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: "down", Uplink: st.Name, Iface: st.Iface, Reason: why})
			}
			linkUpAgain()
			if old.Usable && st.Usable {
				r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: "up", Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: st.Reason})
			}
		}
		if seen && r.flushOnTransition(old, st) {
			r.ctFlush = append(r.ctFlush, r.uplinkIndex(st.Name))
		} else if seen && flush6OnTransition(old.IPv6, st.IPv6) {
			// The IPv6 side alone failed or renumbered: its IPv6
			// connections go, the IPv4 ones stay.
			r.ctFlush6 = append(r.ctFlush6, r.uplinkIndex(st.Name))
		}
		if st.Addr != old.Addr && (seen || st.Addr.IsValid()) {
			r.log.Info("address changed", append(attrs, "event", "addr-change", "old_ip", addrString(old.Addr), "new_ip", addrString(st.Addr))...)
			r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: "addr-change", Uplink: st.Name, Iface: st.Iface,
				OldIP: addrString(old.Addr), NewIP: addrString(st.Addr), Reason: st.Reason})
		}
		if linkUp(st) != linkUp(old) || !seen {
			ev := "link-down"
			if linkUp(st) {
				ev = "link-up"
			}
			r.log.Info("link "+strings.TrimPrefix(ev, "link-"), append(attrs, "event", ev, "reason", st.Reason)...)
			r.host.noteUplinkEvent(st.Name, ev) // the status's last_event, hook or not
			if seen {
				r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: ev, Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: st.Reason})
			}
		}
		if st.Usable != old.Usable && seen {
			ev := "down"
			if st.Usable {
				ev = "up"
			}
			r.host.queueUplinkHook(st.Name, hooks.HookEvent{Event: ev, Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: st.Reason})
		}
		if st.Active != old.Active && seen {
			r.log.Info("default route membership changed", append(attrs, "event", "route", "active", st.Active, "reason", st.Reason)...)
		}
	}
}

// flushOnTransition tells whether a transition clears the uplink's
// conntrack entries (after the pass's firewall sync). An address replaced or
// lost, or a failure, does: an entry made in the instant between the route
// change and the SNAT rewrite would otherwise keep a NAT binding to an
// address that is gone, and LAN hosts reconnect sooner. An address gained
// where there was none does not: the entries of any earlier address went
// when it did, and those there now are NATed to this one.
//
// With two gateways ([ha]) an address that disappears may be a keepalived
// WAN address moving to the other box, whose conntrackd carries the
// connections over: deleting them here would have conntrackd delete them
// there too. So the loss is remembered instead, and the entries go only if
// the uplink comes back with another address.
func (r *reconciler) flushOnTransition(old, st policy.UplinkState) bool {
	switch {
	case old.Addr.IsValid() && !st.Addr.IsValid() && r.cfg.HA.Enabled():
		r.lostAddr[st.Name] = old.Addr
		return false
	case old.Addr.IsValid() && st.Addr != old.Addr:
		return true
	case !old.Addr.IsValid() && st.Addr.IsValid():
		lost, ok := r.lostAddr[st.Name]
		delete(r.lostAddr, st.Name)
		return ok && lost != st.Addr
	}
	return old.Usable && !st.Usable
}

// flushConntrack deletes, inside the kernel and by the uplink's connection
// mark, the conntrack entries of uplinks whose address changed or that
// failed this pass, without counting them: one request instead of three on
// the event path. It returns how many deletes it sent.
func (r *reconciler) flushConntrack() (sent int) {
	for _, i := range r.ctFlush {
		if i < 0 {
			continue
		}
		sent++
		u := r.cfg.Uplinks[i]
		attrs := []any{"event", "conntrack", "uplink", u.Name, "iface", u.Interface}
		if err := r.fw.ClearConntrackByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask); err != nil {
			r.log.Warn("deleting conntrack entries", append(attrs, "reason", err.Error())...)
			continue
		}
		r.log.Info("conntrack entries of the uplink deleted", attrs...)
	}
	r.ctFlush = r.ctFlush[:0]
	return sent + r.flushConntrack6()
}

// flush6OnTransition: an uplink's IPv6 connections go when its IPv6 side
// stops being usable or its IPv6 address changes (the connections from
// the old address are dead).
func flush6OnTransition(old, st policy.UplinkState6) bool {
	return old.On && (old.Usable && !st.Usable || old.Addr.IsValid() && st.Addr != old.Addr)
}

// flushConntrack6 deletes the IPv6 conntrack entries of the uplinks of
// ctFlush6, by their connection mark (set by the IPv6 firewall state for
// uplinks with ipv6 on). It returns how many deletes it sent.
func (r *reconciler) flushConntrack6() (sent int) {
	for _, i := range r.ctFlush6 {
		if i < 0 {
			continue
		}
		sent++
		u := r.cfg.Uplinks[i]
		attrs := []any{"event", "conntrack", "uplink", u.Name, "iface", u.Interface, "family", "ipv6"}
		if err := r.fw.ClearConntrack6ByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask); err != nil {
			r.log.Warn("deleting IPv6 conntrack entries", append(attrs, "reason", err.Error())...)
			continue
		}
		r.log.Info("IPv6 conntrack entries of the uplink deleted", attrs...)
	}
	r.ctFlush6 = r.ctFlush6[:0]
	return sent
}

// forgetMovedMarks: connection marks are per uplink position, so an uplink
// removed or moved by a reload would hand its connections' mark to another
// uplink (and its sticky rule would route them there). Those connections are
// deleted instead and start over.
func (r *reconciler) forgetMovedMarks(old, cfg *policy.Config) {
	for i, u := range old.Uplinks {
		if i < len(cfg.Uplinks) && cfg.Uplinks[i].Name == u.Name {
			continue
		}
		if _, err := r.fw.DeleteConntrackByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask); err != nil {
			r.log.Warn("deleting conntrack entries of a moved uplink", "event", "conntrack", "uplink", u.Name, "reason", err.Error())
		}
	}
}

func (r *reconciler) uplinkIndex(name string) int {
	for i := range r.cfg.Uplinks {
		if r.cfg.Uplinks[i].Name == name {
			return i
		}
	}
	return -1
}

// forgetStaleGateways deletes the neighbour entry of the gateway of every
// uplink about to rejoin the default route: an entry left from before the
// failure may point at a MAC that is gone, blackholing the fail-back.
func (r *reconciler) forgetStaleGateways(states []policy.UplinkState, obs policy.Observed) {
	for _, st := range states {
		if st.Active && !r.wasActive[st.Name] && st.Gateway.IsValid() {
			if err := r.kernel.ForgetNeighbor(st.Iface, st.Gateway, obs); err != nil {
				r.log.Warn("deleting the gateway's neighbour entry", "uplink", st.Name, "iface", st.Iface, "reason", err.Error())
			}
		}
	}
	clear(r.wasActive)
	for _, st := range states {
		r.wasActive[st.Name] = st.Active
	}
}
