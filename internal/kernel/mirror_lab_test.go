package kernel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// TestMirrorMatchesDump is the proof that the mirror is right: after each
// kind of change, including those the kernel makes silently (the routes a
// link takes with it when it goes down, is deleted or loses its address),
// the mirror equals a fresh dump read by another parser.
func TestMirrorMatchesDump(t *testing.T) {
	f := newFixture(t)
	ppp0 := f.link("ppp0")
	eth1 := f.link("eth1")
	pppAddr := f.l.UplinkAddr("ppp0")
	ethGW := f.l.ISPAddr("eth1")

	route := func(r *netlink.Route) *netlink.Route {
		if r.Family == 0 {
			r.Family = unix.AF_INET
		}
		return r
	}
	addRoutes := func() {
		for _, r := range []*netlink.Route{
			// main: plain, multipath over both links, with prefsrc.
			{Dst: ipn("198.51.100.0/24"), LinkIndex: f.link("ppp0").Attrs().Index},
			{Dst: ipn("203.0.113.0/24"), MultiPath: []*netlink.NexthopInfo{
				{LinkIndex: f.link("ppp0").Attrs().Index}, {LinkIndex: eth1.Attrs().Index, Gw: ethGW.AsSlice(), Hops: 2}}},
			{Dst: ipn("192.0.2.0/24"), LinkIndex: f.link("ppp0").Attrs().Index, Src: f.l.UplinkAddr("ppp0").AsSlice()},
			// owned tables, uplinkd's protocol
			{Dst: ipn("0.0.0.0/0"), LinkIndex: f.link("ppp0").Attrs().Index, Table: tableA, Protocol: policy.Protocol},
			{Dst: ipn("0.0.0.0/0"), LinkIndex: eth1.Attrs().Index, Gw: ethGW.AsSlice(), Table: tableB, Protocol: policy.Protocol},
			// a foreign table: its default route is kept, the rest is not
			{Dst: ipn("0.0.0.0/0"), LinkIndex: eth1.Attrs().Index, Gw: ethGW.AsSlice(), Table: foreignT},
			{Dst: ipn("10.9.0.0/16"), LinkIndex: f.link("ppp0").Attrs().Index, Table: foreignT},
		} {
			f.must(f.h.RouteAdd(route(r)), "route add "+r.String())
		}
	}
	addRoutes()
	obs := f.check("initial routes")
	if slices.ContainsFunc(obs.Routes, func(r policy.Route) bool { return r.Table == foreignT && r.Dst.Bits() != 0 }) {
		t.Fatal("a non-default route of a foreign table is in the mirror")
	}
	if !slices.ContainsFunc(obs.Routes, func(r policy.Route) bool { return r.Table == foreignT && r.Dst.Bits() == 0 }) {
		t.Fatal("the default route of a foreign table is not in the mirror")
	}
	// Down transitions in the link history, as the loop counts them.
	bounces := func(name string) int {
		recs, _ := f.k.LinkHistory(0, f.mirrorOnly().LinkSeq)
		return linklog.Summarize(recs)[name].Downs
	}

	// Link down and up: the kernel drops every route via ppp0 without a
	// word, keeps the multipath route with its ppp0 path dead.
	f.must(f.h.LinkSetDown(ppp0), "ppp0 down")
	obs = f.check("ppp0 down")
	if slices.ContainsFunc(obs.Routes, func(r policy.Route) bool { return r.Table == tableA }) {
		t.Fatal("ppp0's table route survived the link going down")
	}
	if got := bounces("ppp0"); got != 1 {
		t.Fatalf("ppp0 bounces after down = %d, want 1", got)
	}
	f.must(f.h.LinkSetUp(ppp0), "ppp0 up")
	f.check("ppp0 up")
	addRoutes2 := func(name string) {
		idx := f.link(name).Attrs().Index
		f.must(f.h.RouteAdd(route(&netlink.Route{Dst: ipn("0.0.0.0/0"), LinkIndex: idx, Table: tableA, Protocol: policy.Protocol})), "table route")
		f.must(f.h.RouteAdd(route(&netlink.Route{Dst: ipn("198.51.100.0/24"), LinkIndex: idx})), "main route")
	}
	addRoutes2("ppp0")
	f.check("routes re-added")

	// A redial: ppp0 deleted (all its routes, the multipath one included,
	// go silently) and re-created with the next address.
	if _, err := f.l.Redial("ppp0"); err != nil {
		t.Fatal(err)
	}
	obs = f.check("redial (delete and re-create)")
	if slices.ContainsFunc(obs.Routes, func(r policy.Route) bool { return r.Dst.String() == "203.0.113.0/24" }) {
		t.Fatal("the multipath route with a path via the deleted link survived")
	}
	if got := bounces("ppp0"); got != 2 {
		t.Fatalf("ppp0 bounces after redial = %d, want 2", got)
	}
	if obs.Addrs["ppp0"][0].Prefix.Addr() == pppAddr {
		t.Fatal("redial kept the old address")
	}
	addRoutes2("ppp0")
	f.must(f.h.RouteAdd(route(&netlink.Route{Dst: ipn("192.0.2.0/24"), LinkIndex: f.link("ppp0").Attrs().Index,
		Src: f.l.UplinkAddr("ppp0").AsSlice()})), "prefsrc route")
	f.check("routes after redial")

	// Address changes on eth1: a secondary, a second subnet, the primary
	// removed (its secondary is promoted or removed with it), and a main
	// route whose preferred source was the removed address.
	ethAddr := f.l.UplinkAddr("eth1")
	orig := netip.PrefixFrom(ethAddr, 24)
	sec := netip.PrefixFrom(ethAddr.Next().Next().Next(), 24)
	other := netip.MustParsePrefix("172.31.5.1/24")
	f.must(f.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipn(sec.String())}), "add secondary")
	f.check("secondary address added")
	f.must(f.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipn(other.String())}), "add second subnet")
	f.must(f.h.RouteAdd(route(&netlink.Route{Dst: ipn("192.0.2.128/25"), LinkIndex: eth1.Attrs().Index, Src: ethAddr.AsSlice()})), "prefsrc route")
	f.must(f.h.RouteAdd(route(&netlink.Route{Dst: ipn("192.0.2.64/26"), LinkIndex: eth1.Attrs().Index, Src: ethAddr.AsSlice(), Table: tableB})), "prefsrc route in tableB")
	f.check("second subnet and prefsrc routes")
	f.must(f.h.AddrDel(eth1, &netlink.Addr{IPNet: &net.IPNet{IP: orig.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}}), "del primary")
	obs = f.check("primary address removed")
	if slices.ContainsFunc(obs.Routes, func(r policy.Route) bool { return r.Dst.String() == "192.0.2.128/25" }) {
		t.Fatal("the main route with the removed address as source survived")
	}
	// Every address gone: IP is disabled on eth1, its routes go.
	for _, a := range f.mirrorOnly().Addrs["eth1"] {
		f.must(f.h.AddrDel(eth1, &netlink.Addr{IPNet: ipn(a.Prefix.String())}), "del "+a.Prefix.String())
	}
	obs = f.check("all addresses of eth1 removed")
	if slices.ContainsFunc(obs.Routes, func(r policy.Route) bool {
		return slices.ContainsFunc(r.Nexthops, func(nh policy.Nexthop) bool { return nh.Dev == "eth1" })
	}) {
		t.Fatal("a route via eth1 survived the loss of its last address")
	}
	f.must(f.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipn(orig.String())}), "re-add address")
	f.check("address back")

	// Routes added and deleted in owned and foreign tables, a replace.
	for _, table := range []int{unix.RT_TABLE_MAIN, tableA, foreignT} {
		r := route(&netlink.Route{Dst: ipn("100.100.0.0/16"), LinkIndex: f.link("ppp0").Attrs().Index, Table: table, Priority: 7})
		f.must(f.h.RouteAdd(r), "add")
		f.check("route add")
		r.Priority = 7
		r.LinkIndex = f.link("lan0").Attrs().Index
		f.must(f.h.RouteReplace(r), "replace")
		f.check("route replace")
		f.must(f.h.RouteDel(r), "del")
		f.check("route del")
	}
	// Rules.
	rule := netlink.NewRule()
	rule.Family, rule.Priority, rule.Table, rule.Src = unix.AF_INET, 1234, tableA, ipn("10.0.0.0/8")
	rule.Protocol = policy.Protocol
	f.must(f.h.RuleAdd(rule), "rule add")
	f.check("rule add")
	uid := netlink.NewRule()
	uid.Family, uid.Priority, uid.Table, uid.UIDRange = unix.AF_INET, 1235, tableB, netlink.NewRuleUIDRange(100, 200)
	f.must(f.h.RuleAdd(uid), "uid rule add")
	f.check("uid rule add")
	// uplinkd's own `lookup main suppress_prefixlength 0`, and a foreign
	// one with another length (a selector uplinkd never writes).
	supp := netlink.NewRule()
	supp.Family, supp.Priority, supp.Table, supp.SuppressPrefixlen = unix.AF_INET, 1236, unix.RT_TABLE_MAIN, 0
	supp.Protocol = policy.Protocol
	f.must(f.h.RuleAdd(supp), "suppress rule add")
	supp8 := netlink.NewRule()
	supp8.Family, supp8.Priority, supp8.Table, supp8.SuppressPrefixlen = unix.AF_INET, 1237, unix.RT_TABLE_MAIN, 8
	f.must(f.h.RuleAdd(supp8), "suppress /8 rule add")
	f.check("suppress rules add")
	f.must(f.h.RuleDel(rule), "rule del")
	f.must(f.h.RuleDel(uid), "uid rule del")
	f.must(f.h.RuleDel(supp), "suppress rule del")
	f.must(f.h.RuleDel(supp8), "suppress /8 rule del")
	f.check("rule del")

	// Carrier loss at the far end: a bounce, no route change.
	before := bounces("eth1")
	if _, err := f.l.SetCarrier("eth1", false); err != nil {
		t.Fatal(err)
	}
	f.check("carrier lost")
	if _, err := f.l.SetCarrier("eth1", true); err != nil {
		t.Fatal(err)
	}
	f.check("carrier back")
	if got := bounces("eth1"); got != before+1 {
		t.Fatalf("eth1 bounces after carrier loss = %d, want %d", got, before+1)
	}
}

// TestApplyWritesThrough: a snapshot right after Apply has what was written,
// before any notification (the first half runs without a subscription, so
// nothing but the write-through can put it there), and the notifications,
// once they come, change nothing (no second copy of a rule or route).
func TestApplyWritesThrough(t *testing.T) {
	for _, run := range []bool{false, true} {
		name := "write-through alone"
		if run {
			name = "with notifications"
		}
		t.Run(name, func(t *testing.T) { testApplyWritesThrough(t, run) })
	}
}

func testApplyWritesThrough(t *testing.T, run bool) {
	f := newFixtureRun(t, run)
	check := func(step string) policy.Observed {
		if run {
			return f.check(step)
		}
		return f.checkNow(step)
	}
	obs := check("start")
	gw := f.l.ISPAddr("eth1")
	changes := []policy.Change{
		{Op: policy.OpAddRoute, Route: policy.Route{Table: tableA, Dst: netip.MustParsePrefix("0.0.0.0/0"), Protocol: policy.Protocol,
			Nexthops: []policy.Nexthop{{Dev: "ppp0"}}}},
		{Op: policy.OpReplaceRoute, Route: policy.Route{Table: unix.RT_TABLE_MAIN, Dst: netip.MustParsePrefix("0.0.0.0/0"), Protocol: policy.Protocol,
			Nexthops: []policy.Nexthop{{Dev: "ppp0", Weight: 1}, {Dev: "eth1", Gateway: gw, Weight: 3}}}},
		{Op: policy.OpAddRule, Rule: policy.Rule{Priority: 1000, Table: tableA, Src: netip.PrefixFrom(f.l.UplinkAddr("ppp0"), 32), Protocol: policy.Protocol}},
		{Op: policy.OpAddRule, Rule: policy.Rule{Priority: 1001, Table: tableB, Mark: 0x200, Mask: 0xff00, Protocol: policy.Protocol}},
	}
	f.must(f.k.Apply(changes, obs), "apply")
	now := f.mirrorOnly()
	desired := policy.Desired{Routes: []policy.Route{changes[0].Route, changes[1].Route}, Rules: []policy.Rule{changes[2].Rule, changes[3].Rule}}
	if d := policy.Diff(desired, now); len(d) != 0 {
		t.Errorf("a pass right after Apply would change %v", d)
	}
	after := check("apply")
	if d := policy.Diff(desired, after); len(d) != 0 {
		t.Errorf("a pass after the notifications would change %v", d)
	}
	// Deletions write through too.
	dels := policy.FlushChanges(after)
	if len(dels) != 4 {
		t.Fatalf("flush of owned state: %d changes, want 4", len(dels))
	}
	f.must(f.k.Apply(dels, after), "flush")
	if left := policy.FlushChanges(f.mirrorOnly()); len(left) != 0 {
		t.Errorf("owned state left in the mirror right after the flush: %v", left)
	}
	check("flush")
}

// TestResyncAfterFailedWrite: a write the kernel refuses makes the next
// snapshot dump afresh.
func TestResyncAfterFailedWrite(t *testing.T) {
	f := newFixture(t)
	obs := f.sync()
	bad := []policy.Change{{Op: policy.OpAddRoute, Route: policy.Route{Table: tableA, Dst: netip.MustParsePrefix("0.0.0.0/0"),
		Protocol: policy.Protocol, Nexthops: []policy.Nexthop{{Dev: "ppp0", Gateway: netip.MustParseAddr("203.0.113.9")}}}}}
	if err := f.k.Apply(bad, obs); err == nil {
		t.Fatal("a route via an unreachable gateway was accepted")
	}
	f.k.m.mu.Lock()
	stale := f.k.m.stale
	f.k.m.mu.Unlock()
	if !stale {
		t.Fatal("a failed write did not mark the mirror for a dump")
	}
	if _, err := f.k.Snapshot(); err != nil {
		t.Fatal(err)
	}
	f.check("dump after the failed write")

	// A link not up yet (the address of a redial arrives before the
	// link-up): the write fails with ENETDOWN, and the mirror, which knows
	// the link is down, stays as it is — no dump on every redial.
	f.must(f.h.LinkSetDown(f.link("ppp0")), "ppp0 down")
	obs = f.check("ppp0 down")
	dumps := f.k.Dumps()
	down := []policy.Change{{Op: policy.OpAddRoute, Route: policy.Route{Table: tableA, Dst: netip.MustParsePrefix("0.0.0.0/0"),
		Protocol: policy.Protocol, Nexthops: []policy.Nexthop{{Dev: "ppp0"}}}}}
	if err := f.k.Apply(down, obs); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("route via a down link: %v, want ENETDOWN", err)
	}
	if _, err := f.k.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if f.k.Dumps() != dumps {
		t.Fatal("a write refused because the link is down made the mirror dump")
	}
	f.check("after the refused write")
}

// TestRPFilterFromMirror: a link's rp_filter is read from the mirror and
// written over netlink, and both agree with the sysctl file: after uplinkd's
// write, after an admin's write to the file, and for a re-created link.
func TestRPFilterFromMirror(t *testing.T) {
	f := newFixture(t)
	const key = "net/ipv4/conf/ppp0/rp_filter"
	file := func() string {
		var v []byte
		f.must(netnsx.Do(f.ns, func() (err error) {
			v, err = os.ReadFile("/proc/sys/" + key)
			return err
		}), "read "+key)
		return strings.TrimSpace(string(v))
	}
	mirror := func() string {
		got, err := f.k.ReadSysctls([]string{key})
		f.must(err, "ReadSysctls")
		if _, cached := f.k.sysctls[key]; cached {
			t.Fatalf("%s was read from its file, not from the mirror", key)
		}
		return got[key]
	}
	// Notifications may trail the change a little; the marker orders them.
	agree := func(step, want string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			f.sync()
			m, fl := mirror(), file()
			if m == fl && (want == "" || m == want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: mirror says %q, the file %q (want %q)", step, m, fl, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	agree("start", "")
	for _, v := range []string{"2", "1", "0"} {
		f.must(f.k.Apply([]policy.Change{{Op: policy.OpSetSysctl, Sysctl: policy.Sysctl{Key: key, Value: v}}}, f.mirrorOnly()), "apply")
		if got := file(); got != v {
			t.Fatalf("after writing %s over netlink the file says %s", v, got)
		}
		agree("uplinkd wrote "+v, v)
	}
	f.must(netnsx.Do(f.ns, func() error { return os.WriteFile("/proc/sys/"+key, []byte("2"), 0) }), "admin write")
	agree("an admin wrote the file", "2")
	if _, err := f.l.Redial("ppp0"); err != nil {
		t.Fatal(err)
	}
	agree("redial", "")
	if _, ok := f.k.sysctls[key]; ok {
		t.Fatal("the file was opened")
	}
}

// TestAddIntoTakenSlot: an add that finds the slot taken by a route the
// mirror did not show (here: added behind its back, with no notification
// read yet) must not put uplinkd's route into the mirror; the next
// snapshot reads the truth, and Diff then sees the conflict.
func TestAddIntoTakenSlot(t *testing.T) {
	f := newFixtureRun(t, false) // no subscription: the mirror cannot learn of the foreign route
	obs := f.mirrorOnly()
	foreign := &netlink.Route{Family: unix.AF_INET, Dst: ipn("0.0.0.0/0"), Table: tableA, LinkIndex: f.link("eth1").Attrs().Index,
		Gw: f.l.ISPAddr("eth1").AsSlice()}
	f.must(f.h.RouteAdd(foreign), "foreign route")
	ours := policy.Route{Table: tableA, Dst: netip.MustParsePrefix("0.0.0.0/0"), Protocol: policy.Protocol, Nexthops: []policy.Nexthop{{Dev: "ppp0"}}}
	f.must(f.k.Apply([]policy.Change{{Op: policy.OpAddRoute, Route: ours}}, obs), "apply")
	now, err := f.k.Snapshot()
	f.must(err, "snapshot")
	if slices.ContainsFunc(now.Routes, ours.Equal) {
		t.Fatal("the mirror shows uplinkd's route in a slot a foreign route holds")
	}
	d := policy.Diff(policy.Desired{Routes: []policy.Route{ours}}, now)
	if len(d) != 1 || d[0].Op != policy.OpConflict {
		t.Fatalf("diff %v, want one conflict", d)
	}
	f.checkNow("after the add into a taken slot")
}

// watch runs the fixture's kernel watcher (Kernel.Run, which feeds the
// mirror) until the test ends, and returns its events after the first
// resync.
func (f *fixture) watch(t *testing.T) <-chan watcher.Event {
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan watcher.Event, 1024)
	done := make(chan error, 1)
	go func() { done <- f.k.Run(ctx, events) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if ev := <-events; ev.Kind != watcher.KindResync {
		t.Fatalf("first event %v, want resync", ev.Kind)
	}
	return events
}

// awaitEvent returns the first event that matches, skipping the rest.
func awaitEvent(t *testing.T, events <-chan watcher.Event, step string, match func(watcher.Event) bool) watcher.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if match(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no such event", step)
		}
	}
}

// TestEchoOfOwnWrites: the watcher events of the rules and routes Apply
// writes and deletes say they are echoes (the daemon runs no pass for
// them); the same writes by someone else do not, so a delete of uplinkd's
// rule by an admin still brings the pass that repairs it.
func TestEchoOfOwnWrites(t *testing.T) {
	f := newFixtureRun(t, false)
	events := f.watch(t)
	// next is the next rule or route event.
	next := func(step string) watcher.Event {
		t.Helper()
		return awaitEvent(t, events, step, func(ev watcher.Event) bool {
			return ev.Kind == watcher.KindRule || ev.Kind == watcher.KindRoute
		})
	}
	obs, err := f.k.Snapshot()
	f.must(err, "snapshot")

	rule := policy.Rule{Priority: 1000, Table: tableA, Src: netip.PrefixFrom(f.l.UplinkAddr("ppp0"), 32), Protocol: policy.Protocol}
	route := policy.Route{Table: tableA, Dst: netip.MustParsePrefix("0.0.0.0/0"), Protocol: policy.Protocol, Nexthops: []policy.Nexthop{{Dev: "ppp0"}}}
	foreignRule := func() *netlink.Rule {
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table, r.Protocol = unix.AF_INET, 1000, tableA, policy.Protocol
		r.Src = &net.IPNet{IP: f.l.UplinkAddr("ppp0").AsSlice(), Mask: net.CIDRMask(32, 32)}
		return r
	}
	expect := func(step string, kind watcher.Kind, deleted bool, effect watcher.Effect) {
		t.Helper()
		ev := next(step)
		if ev.Kind != kind || ev.Deleted != deleted || ev.Effect != effect {
			t.Fatalf("%s: event %v deleted=%v effect=%v, want %v deleted=%v effect=%v",
				step, ev.Kind, ev.Deleted, ev.Effect, kind, deleted, effect)
		}
	}

	f.must(f.k.Apply([]policy.Change{{Op: policy.OpAddRule, Rule: rule}, {Op: policy.OpAddRoute, Route: route}}, obs), "apply adds")
	expect("uplinkd adds the rule", watcher.KindRule, false, watcher.Echo)
	expect("uplinkd adds the route", watcher.KindRoute, false, watcher.Echo)

	f.must(f.h.RuleDel(foreignRule()), "admin deletes the rule")
	expect("an admin deletes the rule", watcher.KindRule, true, watcher.Changed)
	f.must(f.h.RuleAdd(foreignRule()), "admin adds it back")
	expect("an admin adds the rule", watcher.KindRule, false, watcher.Changed)

	obs, err = f.k.Snapshot()
	f.must(err, "snapshot")
	f.must(f.k.Apply([]policy.Change{{Op: policy.OpDelRule, Rule: rule}, {Op: policy.OpDelRoute, Route: route}}, obs), "apply deletes")
	expect("uplinkd deletes the rule", watcher.KindRule, true, watcher.Echo)
	expect("uplinkd deletes the route", watcher.KindRoute, true, watcher.Echo)

	// A delete that finds nothing sends no notification and is waited for
	// by nobody: the admin's delete after it is no echo.
	f.must(f.h.RuleAdd(foreignRule()), "admin adds the rule")
	expect("an admin adds the rule again", watcher.KindRule, false, watcher.Changed)
	obs, err = f.k.Snapshot()
	f.must(err, "snapshot")
	f.must(f.h.RuleDel(foreignRule()), "admin deletes the rule")
	f.must(f.k.Apply([]policy.Change{{Op: policy.OpDelRule, Rule: rule}}, obs), "apply a delete of a rule gone")
	// Changed if the watcher applied the admin's delete before Apply ran,
	// Unchanged if after (Apply's delete, finding nothing, took the rule out
	// of the mirror already); never an echo.
	if ev := next("an admin deletes the rule before uplinkd"); ev.Kind != watcher.KindRule || !ev.Deleted || ev.Effect == watcher.Echo {
		t.Fatalf("an admin deletes the rule before uplinkd: event %v deleted=%v effect=%v, want a rule deletion that is no echo",
			ev.Kind, ev.Deleted, ev.Effect)
	}
}

// TestUnchangedNotifications: the watcher events of notifications that
// change nothing the mirror keeps say so (the daemon runs no pass for
// them), on the real kernel: the routes of table local an address brings
// and takes, a link message for a field the mirror does not keep (the
// queue length), an IPv6 address while IPv6 is off. The IPv4 address
// itself, and an MTU change, are changes.
func TestUnchangedNotifications(t *testing.T) {
	// An IPv6 lab with the mirror's IPv6 off: no uplink has ipv6 on.
	f := newFixtureSpec(t, false, 0, true)
	f.k.SetIPv6(false)
	events := f.watch(t)
	if _, err := f.k.Snapshot(); err != nil {
		t.Fatal(err)
	}
	await := func(step string, match func(watcher.Event) bool) watcher.Event {
		t.Helper()
		return awaitEvent(t, events, step, match)
	}
	want := func(step string, ev watcher.Event, effect watcher.Effect) {
		t.Helper()
		if ev.Effect != effect {
			t.Errorf("%s: %v event (deleted=%v table=%d) has effect %v, want %v", step, ev.Kind, ev.Deleted, ev.Table, ev.Effect, effect)
		}
	}
	link := f.link("eth1")
	index := link.Attrs().Index
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 251, 0, 1), Mask: net.CIDRMask(32, 32)}}
	isAddr := func(deleted bool) func(watcher.Event) bool {
		return func(ev watcher.Event) bool {
			return ev.Kind == watcher.KindAddr && !ev.IPv6 && ev.Index == index && ev.Deleted == deleted
		}
	}
	isLocalRoute := func(deleted bool) func(watcher.Event) bool {
		return func(ev watcher.Event) bool {
			return ev.Kind == watcher.KindRoute && !ev.IPv6 && ev.Table == unix.RT_TABLE_LOCAL && ev.Deleted == deleted
		}
	}
	isLink := func(ev watcher.Event) bool { return ev.Kind == watcher.KindLink && ev.Index == index }

	addr6 := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("2001:db8:fe::1"), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
	f.must(f.h.AddrAdd(link, addr6), "IPv6 address add")
	want("an IPv6 address", await("an IPv6 address", func(ev watcher.Event) bool {
		return ev.Kind == watcher.KindAddr && ev.IPv6 && ev.Index == index && !ev.Deleted
	}), watcher.Unchanged)

	f.must(f.h.AddrAdd(link, addr), "address add")
	want("the address", await("the address", isAddr(false)), watcher.Changed)
	want("its local route", await("its local route", isLocalRoute(false)), watcher.Unchanged)

	f.must(f.h.LinkSetTxQLen(link, link.Attrs().TxQLen+1), "txqueuelen")
	want("a new queue length", await("a new queue length", isLink), watcher.Unchanged)
	f.must(f.h.LinkSetMTU(link, link.Attrs().MTU-8), "mtu")
	want("a new MTU", await("a new MTU", isLink), watcher.Changed)

	f.must(f.h.AddrDel(link, addr), "address delete")
	want("the address gone", await("the address gone", isAddr(true)), watcher.Changed)
	want("its local route gone", await("its local route gone", isLocalRoute(true)), watcher.Unchanged)
	f.checkNow("after the changes")
}
