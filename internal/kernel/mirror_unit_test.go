package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// Unit tests of the mirror's update rules on synthetic messages (no root,
// no kernel); TestMirrorMatchesDump checks the same rules against a kernel.

func encode(t *testing.T, hdr []byte, attrs func(*netlink.AttributeEncoder)) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(hdr, b...)
}

func linkMsg(t *testing.T, family uint8, index int32, name string, flags uint32) []byte {
	hdr := make([]byte, unix.SizeofIfInfomsg)
	hdr[0] = family
	binary.NativeEndian.PutUint32(hdr[4:], uint32(index))
	binary.NativeEndian.PutUint32(hdr[8:], flags)
	return encode(t, hdr, func(ae *netlink.AttributeEncoder) { ae.String(unix.IFLA_IFNAME, name) })
}

// countedLinkMsg is a link message with the kernel's carrier counters, as
// every RTM_NEWLINK of a current kernel has them: downs carrier losses and
// as many gains (the link is up) or one fewer (it is down).
func countedLinkMsg(t *testing.T, index int32, name string, flags uint32, downs uint32) []byte {
	hdr := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(hdr[4:], uint32(index))
	binary.NativeEndian.PutUint32(hdr[8:], flags)
	ups := downs
	if flags&unix.IFF_LOWER_UP != 0 {
		ups++
	}
	return encode(t, hdr, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.IFLA_IFNAME, name)
		ae.Uint32(unix.IFLA_CARRIER_CHANGES, ups+downs)
		ae.Uint32(unix.IFLA_CARRIER_UP_COUNT, ups)
		ae.Uint32(unix.IFLA_CARRIER_DOWN_COUNT, downs)
	})
}

// downs is the number of down transitions the mirror's link history holds
// for name: what the loop counts.
func downs(m *mirror, name string) int {
	recs, _ := m.history.Between(0, m.history.Last())
	return linklog.Summarize(recs)[name].Downs
}

func addrMsg(t *testing.T, index int32, p string, secondary bool) []byte {
	pfx := netip.MustParsePrefix(p)
	hdr := []byte{unix.AF_INET, byte(pfx.Bits()), 0, unix.RT_SCOPE_UNIVERSE, 0, 0, 0, 0}
	if secondary {
		hdr[2] = unix.IFA_F_SECONDARY
	}
	binary.NativeEndian.PutUint32(hdr[4:], uint32(index))
	return encode(t, hdr, func(ae *netlink.AttributeEncoder) {
		ae.Bytes(unix.IFA_LOCAL, pfx.Addr().AsSlice())
		ae.Bytes(unix.IFA_ADDRESS, pfx.Addr().AsSlice())
	})
}

type testRoute struct {
	table   uint32
	dst     string
	proto   uint8
	oifs    []int32
	prefsrc string
}

func routeMsg(t *testing.T, r testRoute) []byte {
	dst := netip.MustParsePrefix(r.dst)
	tb := byte(r.table)
	if r.table > 255 {
		tb = unix.RT_TABLE_COMPAT
	}
	hdr := []byte{unix.AF_INET, byte(dst.Bits()), 0, 0, tb, r.proto, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
	return encode(t, hdr, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.RTA_TABLE, r.table)
		if dst.Bits() > 0 {
			ae.Bytes(unix.RTA_DST, dst.Addr().AsSlice())
		}
		if r.prefsrc != "" {
			ae.Bytes(unix.RTA_PREFSRC, netip.MustParseAddr(r.prefsrc).AsSlice())
		}
		if len(r.oifs) == 1 {
			ae.Uint32(unix.RTA_OIF, uint32(r.oifs[0]))
			return
		}
		var mp []byte
		for _, oif := range r.oifs {
			nh := make([]byte, unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint16(nh, unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint32(nh[4:], uint32(oif))
			mp = append(mp, nh...)
		}
		ae.Bytes(unix.RTA_MULTIPATH, mp)
	})
}

func ruleMsg(t *testing.T, prio, table uint32, proto uint8) []byte {
	hdr := []byte{unix.AF_INET, 0, 0, 0, byte(table), 0, 0, unix.FR_ACT_TO_TBL, 0, 0, 0, 0}
	return encode(t, hdr, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.FRA_PRIORITY, prio)
		ae.Uint32(unix.FRA_TABLE, table)
		ae.Uint8(unix.FRA_PROTOCOL, proto)
	})
}

const (
	up      = unix.IFF_UP | unix.IFF_LOWER_UP
	noCarry = unix.IFF_UP
)

type step struct {
	typ   netlink.HeaderType
	flags netlink.HeaderFlags
	data  func(t *testing.T) []byte
}

func TestMirrorUpdateRules(t *testing.T) {
	ppp0 := func(flags uint32) step {
		return step{unix.RTM_NEWLINK, 0, func(t *testing.T) []byte { return linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", flags) }}
	}
	eth1 := step{unix.RTM_NEWLINK, 0, func(t *testing.T) []byte { return linkMsg(t, unix.AF_UNSPEC, 6, "eth1", up) }}
	addr := func(typ netlink.HeaderType, index int32, p string, sec bool) step {
		return step{typ, 0, func(t *testing.T) []byte { return addrMsg(t, index, p, sec) }}
	}
	route := func(typ netlink.HeaderType, flags netlink.HeaderFlags, r testRoute) step {
		return step{typ, flags, func(t *testing.T) []byte { return routeMsg(t, r) }}
	}
	newRoute := func(r testRoute) step { return route(unix.RTM_NEWROUTE, 0, r) }
	single := testRoute{table: 254, dst: "198.51.100.0/24", oifs: []int32{5}}
	multi := testRoute{table: 254, dst: "203.0.113.0/24", oifs: []int32{5, 6}}
	owned := testRoute{table: 1000, dst: "0.0.0.0/0", proto: policy.Protocol, oifs: []int32{5}}
	base := []step{ppp0(up), eth1, addr(unix.RTM_NEWADDR, 5, "100.64.0.10/32", false),
		addr(unix.RTM_NEWADDR, 6, "100.64.1.10/24", false), newRoute(single), newRoute(multi), newRoute(owned)}

	tests := []struct {
		name        string
		steps       []step
		wantRoutes  []string // Dst/table of the routes left, sorted
		wantBounces int      // of ppp0
	}{
		{"base", nil, []string{"0.0.0.0/0@1000", "198.51.100.0/24@254", "203.0.113.0/24@254"}, 0},
		{"carrier lost: a bounce, routes stay", []step{ppp0(noCarry)},
			[]string{"0.0.0.0/0@1000", "198.51.100.0/24@254", "203.0.113.0/24@254"}, 1},
		{"link down: routes via it only go, multipath stays", []step{ppp0(0)},
			[]string{"203.0.113.0/24@254"}, 1},
		{"link deleted: multipath with a path via it goes too",
			[]step{{unix.RTM_DELLINK, 0, func(t *testing.T) []byte { return linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", up) }}},
			nil, 1},
		{"bridge-family DELLINK is not a deletion",
			[]step{{unix.RTM_DELLINK, 0, func(t *testing.T) []byte { return linkMsg(t, unix.AF_BRIDGE, 5, "ppp0", up) }}},
			[]string{"0.0.0.0/0@1000", "198.51.100.0/24@254", "203.0.113.0/24@254"}, 0},
		{"last address removed: IP disabled on the link", []step{addr(unix.RTM_DELADDR, 5, "100.64.0.10/32", false)},
			[]string{"203.0.113.0/24@254"}, 0},
		{"an address removed: main routes with it as source go, other tables keep theirs", []step{
			addr(unix.RTM_NEWADDR, 6, "100.64.1.20/24", true),
			newRoute(testRoute{table: 254, dst: "192.0.2.0/24", oifs: []int32{6}, prefsrc: "100.64.1.20"}),
			newRoute(testRoute{table: 1001, dst: "192.0.2.0/24", oifs: []int32{6}, prefsrc: "100.64.1.20"}),
			addr(unix.RTM_DELADDR, 6, "100.64.1.20/24", true)},
			[]string{"0.0.0.0/0@1000", "192.0.2.0/24@1001", "198.51.100.0/24@254", "203.0.113.0/24@254"}, 0},
		{"foreign table: only its default and owned routes are kept", []step{
			newRoute(testRoute{table: 2000, dst: "10.9.0.0/16", oifs: []int32{6}}),
			newRoute(testRoute{table: 2000, dst: "0.0.0.0/0", oifs: []int32{6}}),
			newRoute(testRoute{table: 3000, dst: "10.8.0.0/16", proto: policy.Protocol, oifs: []int32{6}})},
			[]string{"0.0.0.0/0@1000", "0.0.0.0/0@2000", "10.8.0.0/16@3000", "198.51.100.0/24@254", "203.0.113.0/24@254"}, 0},
		{"replace and delete", []step{
			route(unix.RTM_NEWROUTE, netlink.Replace, testRoute{table: 254, dst: "198.51.100.0/24", oifs: []int32{6}}),
			route(unix.RTM_DELROUTE, 0, owned),
			route(unix.RTM_DELROUTE, 0, owned)}, // a second notification changes nothing
			[]string{"198.51.100.0/24@254", "203.0.113.0/24@254"}, 0},
		{"the same notification twice is one route", []step{newRoute(single)},
			[]string{"0.0.0.0/0@1000", "198.51.100.0/24@254", "203.0.113.0/24@254"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMirror()
			m.tables[1000], m.tables[1001] = true, true
			for i, s := range append(slices.Clone(base), tt.steps...) {
				if _, err := m.apply(s.typ, s.flags, s.data(t)); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			var got []string
			for _, r := range m.snapshot().Routes {
				got = append(got, r.Dst.String()+"@"+itoa(r.Table))
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.wantRoutes) {
				t.Errorf("routes %v, want %v", got, tt.wantRoutes)
			}
			if b := downs(m, "ppp0"); b != tt.wantBounces {
				t.Errorf("ppp0 bounces %d, want %d", b, tt.wantBounces)
			}
		})
	}
}

func TestMirrorRuleNotificationOfOwnWrite(t *testing.T) {
	m := newMirror()
	own := &mrule{prio: 1000, table: 1000, mask: 0, proto: policy.Protocol}
	m.addRuleWritten(own, true)
	// The notification of the write: no second copy.
	if _, err := m.apply(unix.RTM_NEWRULE, 0, ruleMsg(t, 1000, 1000, policy.Protocol)); err != nil {
		t.Fatal(err)
	}
	if n := len(m.snapshot().Rules); n != 1 {
		t.Fatalf("%d rules after the notification of our own write, want 1", n)
	}
	// Someone else adds the same rule again (the kernel allows duplicates).
	if _, err := m.apply(unix.RTM_NEWRULE, 0, ruleMsg(t, 1000, 1000, policy.Protocol)); err != nil {
		t.Fatal(err)
	}
	if n := len(m.snapshot().Rules); n != 2 {
		t.Fatalf("%d rules after a real duplicate, want 2", n)
	}
	if _, err := m.apply(unix.RTM_DELRULE, 0, ruleMsg(t, 1000, 1000, policy.Protocol)); err != nil {
		t.Fatal(err)
	}
	if n := len(m.snapshot().Rules); n != 1 {
		t.Fatalf("%d rules after one delete, want 1", n)
	}
}

func TestMirrorBouncesAcrossDump(t *testing.T) {
	m := newMirror()
	dump := func(links ...[]byte) func(netlink.HeaderType, uint8) ([]netlink.Message, error) {
		return func(typ netlink.HeaderType, _ uint8) ([]netlink.Message, error) {
			if typ != unix.RTM_GETLINK {
				return nil, nil
			}
			var out []netlink.Message
			for _, l := range links {
				out = append(out, netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: l})
			}
			return out, nil
		}
	}
	steps := []struct {
		links [][]byte
		want  int
	}{
		{[][]byte{linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", up)}, 0},
		{[][]byte{linkMsg(t, unix.AF_UNSPEC, 9, "ppp0", up)}, 1}, // re-created while we were not looking
		{[][]byte{linkMsg(t, unix.AF_UNSPEC, 9, "ppp0", noCarry)}, 2},
		{[][]byte{linkMsg(t, unix.AF_UNSPEC, 9, "ppp0", up)}, 2},
		{nil, 3}, // gone
	}
	for i, s := range steps {
		if err := m.load(dump(s.links...)); err != nil {
			t.Fatal(err)
		}
		if got := downs(m, "ppp0"); got != s.want {
			t.Fatalf("dump %d: bounces %d, want %d", i, got, s.want)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestMirrorSnapshotOrder: routes come out in the same order every time
// (gateway learning takes the first foreign default route it finds), rules
// in the kernel's order (priority, then the order added).
func TestMirrorSnapshotOrder(t *testing.T) {
	m := newMirror()
	if _, err := m.apply(unix.RTM_NEWLINK, 0, linkMsg(t, unix.AF_UNSPEC, 5, "eth1", up)); err != nil {
		t.Fatal(err)
	}
	for _, table := range []uint32{3000, 254, 2000, 1000, 4000} {
		if _, err := m.apply(unix.RTM_NEWROUTE, 0, routeMsg(t, testRoute{table: table, dst: "0.0.0.0/0", oifs: []int32{5}})); err != nil {
			t.Fatal(err)
		}
	}
	for _, prio := range []uint32{300, 100, 200, 100} {
		if _, err := m.apply(unix.RTM_NEWRULE, 0, ruleMsg(t, prio, prio, 0)); err != nil {
			t.Fatal(err)
		}
	}
	first := m.snapshot()
	for range 20 {
		if got := m.snapshot(); !slices.EqualFunc(got.Routes, first.Routes, policy.Route.Equal) {
			t.Fatalf("route order changed between snapshots")
		}
	}
	var tables []int
	for _, r := range first.Routes {
		tables = append(tables, r.Table)
	}
	if !slices.IsSorted(tables) {
		t.Errorf("routes by table %v, want sorted", tables)
	}
	var prios []int
	for _, r := range first.Rules {
		prios = append(prios, r.Priority)
	}
	if !slices.Equal(prios, []int{100, 100, 200, 300}) {
		t.Errorf("rule priorities %v, want [100 100 200 300]", prios)
	}
}

// TestMirrorStaleReplayAfterDump: a dump (on its own socket) shows the
// kernel as it is; notifications of what happened before it may still be
// queued on the watcher's socket. Replayed, they would tell a bounce that
// already ended as if it happened after the dump (the phantom link-down and
// link-up the loop logged and hooked). The mirror drops them: a link message
// whose carrier counters are behind the mirror's, or about an ifindex the
// dump found deleted. What happened across the dump is one Gap record,
// counted from the kernel's own carrier_down_count.
func TestMirrorStaleReplayAfterDump(t *testing.T) {
	dumpOf := func(links ...[]byte) func(netlink.HeaderType, uint8) ([]netlink.Message, error) {
		return func(typ netlink.HeaderType, _ uint8) ([]netlink.Message, error) {
			if typ != unix.RTM_GETLINK {
				return nil, nil
			}
			var out []netlink.Message
			for _, l := range links {
				out = append(out, netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: l})
			}
			return out, nil
		}
	}
	type msg struct {
		typ  netlink.HeaderType
		data []byte
	}
	tests := []struct {
		name string
		// before: what the mirror was told before the dump; dump: the
		// dump; replay: notifications queued before the dump, applied
		// after it; after: real notifications after the dump.
		before, replay, after []msg
		dump                  [][]byte
		wantDowns             int
		wantUp                bool
		wantIndex             int
	}{
		{
			name:      "bounce before the dump, replayed after it",
			before:    []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 3)}},
			dump:      [][]byte{countedLinkMsg(t, 5, "ppp0", up, 4)},
			replay:    []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", noCarry, 4)}, {unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 4)}},
			wantDowns: 1, wantUp: true, wantIndex: 5,
		},
		{
			name:      "three bounces across the dump, one more after it",
			before:    []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 0)}},
			dump:      [][]byte{countedLinkMsg(t, 5, "ppp0", up, 3)},
			replay:    []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", noCarry, 3)}, {unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 3)}},
			after:     []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", noCarry, 4)}, {unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 4)}},
			wantDowns: 4, wantUp: true, wantIndex: 5,
		},
		{
			name:   "re-created before the dump: the old index's messages are stale",
			before: []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 0)}},
			dump:   [][]byte{countedLinkMsg(t, 9, "ppp0", up, 0)},
			replay: []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", 0, 1)}, {unix.RTM_DELLINK, countedLinkMsg(t, 5, "ppp0", 0, 1)},
				{unix.RTM_NEWLINK, countedLinkMsg(t, 9, "ppp0", 0, 0)}, {unix.RTM_NEWLINK, countedLinkMsg(t, 9, "ppp0", up, 0)}},
			wantDowns: 1, wantUp: true, wantIndex: 9,
		},
		{
			name:      "went down before the dump and stayed down",
			before:    []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 2)}},
			dump:      [][]byte{countedLinkMsg(t, 5, "ppp0", noCarry, 3)},
			replay:    []msg{{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", noCarry, 3)}},
			wantDowns: 1, wantUp: false, wantIndex: 5,
		},
		{
			name:      "admin down without a carrier counter: the state tells",
			before:    []msg{{unix.RTM_NEWLINK, linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", up)}},
			dump:      [][]byte{linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", unix.IFF_LOWER_UP)},
			wantDowns: 1, wantUp: false, wantIndex: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMirror()
			apply := func(ms []msg) {
				t.Helper()
				for _, x := range ms {
					if _, err := m.apply(x.typ, 0, x.data); err != nil {
						t.Fatal(err)
					}
				}
			}
			apply(tt.before)
			if err := m.load(dumpOf(tt.dump...)); err != nil {
				t.Fatal(err)
			}
			dumped := m.snapshot().Links["ppp0"]
			for i, x := range tt.replay {
				apply([]msg{x})
				if got := m.snapshot().Links; len(got) != 1 || got["ppp0"] != dumped {
					t.Fatalf("replayed message %d changed the mirror: %+v, the dump had %+v", i, got, dumped)
				}
			}
			apply(tt.after)
			if got := downs(m, "ppp0"); got != tt.wantDowns {
				recs, _ := m.history.Between(0, m.history.Last())
				t.Errorf("downs %d, want %d; history %v", got, tt.wantDowns, recs)
			}
			l := m.snapshot().Links["ppp0"]
			if up := l.Up && l.Carrier; up != tt.wantUp || l.Index != tt.wantIndex {
				t.Errorf("ppp0 index %d up %v, want %d %v", l.Index, up, tt.wantIndex, tt.wantUp)
			}
		})
	}
}

// TestMirrorHistoryOrder: notifications become records in order, with
// increasing sequence numbers; dump parts do not, the dump is one Gap per
// link name.
func TestMirrorHistoryOrder(t *testing.T) {
	m := newMirror()
	steps := []struct {
		typ  netlink.HeaderType
		data []byte
	}{
		{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", 0, 0)},
		{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "ppp0", up, 0)},
		{unix.RTM_NEWADDR, addrMsg(t, 5, "100.64.0.10/32", false)},
		{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "wan0", up, 0)},
		{unix.RTM_NEWLINK, countedLinkMsg(t, 5, "wan0", noCarry, 1)},
		{unix.RTM_DELADDR, addrMsg(t, 5, "100.64.0.10/32", false)},
		{unix.RTM_DELLINK, countedLinkMsg(t, 5, "wan0", noCarry, 1)},
	}
	for _, s := range steps {
		if _, err := m.apply(s.typ, 0, s.data); err != nil {
			t.Fatal(err)
		}
	}
	recs, complete := m.history.Between(0, m.history.Last())
	var got []string
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Errorf("record %d has sequence %d", i, r.Seq)
		}
		got = append(got, r.Kind.String()+" "+r.Name)
	}
	want := []string{"appeared ppp0", "up ppp0", "addr-added ppp0", "renamed wan0", "down wan0", "addr-removed wan0", "gone wan0"}
	if !complete || !slices.Equal(got, want) {
		t.Fatalf("history %q (complete %v), want %q", got, complete, want)
	}
	if s := linklog.Summarize(recs); s["ppp0"].Downs != 0 || s["wan0"].Downs != 1 || !s["ppp0"].Touched {
		t.Errorf("summary %+v", s)
	}
}

// TestMirrorLateNotificationOfOwnDelete: uplinkd deletes a rule or route
// and writes it again before the delete's notification arrives (a link that
// bounces between passes). That late notification must not remove what is
// back in the kernel; a later, real delete still does. The mirror says which
// notifications were echoes of its own writes (the daemon runs no pass for
// those) and which were someone else's.
func TestMirrorLateNotificationOfOwnDelete(t *testing.T) {
	m := newMirror()
	rule := func() *mrule { return &mrule{prio: 32000, table: 200, mask: 0, proto: policy.Protocol} }
	route := testRoute{table: 200, dst: "0.0.0.0/0", proto: policy.Protocol, oifs: []int32{5}}
	ruleMsg := ruleMsg(t, 32000, 200, policy.Protocol)
	routeMsg := routeMsg(t, route)
	// apply applies a notification; want: what the mirror must say it did
	// (Echo: a write of its own, which needs no pass).
	apply := func(typ netlink.HeaderType, b []byte, want watcher.Effect) {
		t.Helper()
		got, err := m.apply(typ, 0, b)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("notification type %d: effect %v, want %v", typ, got, want)
		}
	}
	counts := func() (rules, routes int) {
		obs := m.snapshot()
		return len(obs.Rules), len(obs.Routes)
	}
	// Both are there (notifications of earlier writes).
	apply(unix.RTM_NEWRULE, ruleMsg, watcher.Changed)
	apply(unix.RTM_NEWROUTE, routeMsg, watcher.Changed)
	r, err := decodeRouteHeader(routeMsg)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := decodeRoute(routeMsg, r, 200)
	if err != nil {
		t.Fatal(err)
	}

	// Delete both (written), write them again, then the deletes'
	// notifications arrive, then those of the adds.
	m.delRuleWritten(rule(), true)
	m.delRouteWritten(&mr, true)
	m.addRuleWritten(rule(), true)
	m.addRouteWritten(&mr, false)
	apply(unix.RTM_DELRULE, ruleMsg, watcher.Echo)
	apply(unix.RTM_DELROUTE, routeMsg, watcher.Echo)
	// A pass may read the mirror right here, before the adds' notifications.
	if ru, ro := counts(); ru != 1 || ro != 1 {
		t.Fatalf("after the deletes' late notifications: %d rules, %d routes; want 1 and 1", ru, ro)
	}
	apply(unix.RTM_NEWRULE, ruleMsg, watcher.Echo)
	apply(unix.RTM_NEWROUTE, routeMsg, watcher.Echo)
	if ru, ro := counts(); ru != 1 || ro != 1 {
		t.Fatalf("after all notifications: %d rules, %d routes; want 1 and 1", ru, ro)
	}

	// Someone else deletes them now: the mirror follows.
	apply(unix.RTM_DELRULE, ruleMsg, watcher.Changed)
	apply(unix.RTM_DELROUTE, routeMsg, watcher.Changed)
	if ru, ro := counts(); ru != 0 || ro != 0 {
		t.Fatalf("after a real delete: %d rules, %d routes; want 0 and 0", ru, ro)
	}

	// A delete that found nothing (ENOENT) sends no notification, so none
	// is waited for.
	apply(unix.RTM_NEWRULE, ruleMsg, watcher.Changed)
	m.delRuleWritten(rule(), false)
	m.addRuleWritten(rule(), true)
	apply(unix.RTM_NEWRULE, ruleMsg, watcher.Echo)
	apply(unix.RTM_DELRULE, ruleMsg, watcher.Changed) // a real delete by someone else
	if ru, _ := counts(); ru != 0 {
		t.Fatalf("a real delete after an ENOENT delete was taken for a notification: %d rules", ru)
	}
}

// TestMirrorInterleavedOwnWrites: a link bouncing faster than the
// notifications arrive makes uplinkd delete and add the same rule and route
// several times before the first notification is read. Whatever the
// interleaving, the mirror ends as the kernel is: one copy of each.
func TestMirrorInterleavedOwnWrites(t *testing.T) {
	m := newMirror()
	rule := func() *mrule { return &mrule{prio: 32000, table: 200, proto: policy.Protocol} }
	route := testRoute{table: 200, dst: "0.0.0.0/0", proto: policy.Protocol, oifs: []int32{5}}
	rmsg, tmsg := ruleMsg(t, 32000, 200, policy.Protocol), routeMsg(t, route)
	h, err := decodeRouteHeader(tmsg)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := decodeRoute(tmsg, h, 200)
	if err != nil {
		t.Fatal(err)
	}
	const cycles = 3
	m.addRuleWritten(rule(), true)
	m.addRouteWritten(&mr, false)
	for range cycles {
		m.delRuleWritten(rule(), true)
		m.delRouteWritten(&mr, true)
		m.addRuleWritten(rule(), true)
		copyRoute := mr
		m.addRouteWritten(&copyRoute, false)
	}
	check := func(when string) {
		t.Helper()
		obs := m.snapshot()
		if len(obs.Rules) != 1 || len(obs.Routes) != 1 {
			t.Fatalf("%s: %d rules, %d routes; want 1 and 1", when, len(obs.Rules), len(obs.Routes))
		}
	}
	check("after the writes")
	// The notifications, in the kernel's order: add, then del/add per cycle.
	for i := range 1 + 2*cycles {
		typR, typT := unix.RTM_NEWRULE, unix.RTM_NEWROUTE
		if i%2 == 1 {
			typR, typT = unix.RTM_DELRULE, unix.RTM_DELROUTE
		}
		if _, err := m.apply(netlink.HeaderType(typR), 0, rmsg); err != nil {
			t.Fatal(err)
		}
		if _, err := m.apply(netlink.HeaderType(typT), 0, tmsg); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("after notification %d", i+1))
	}
}

// TestMirrorLinkDownBeforeOwnAdd: a link's down message that the kernel sent
// before uplinkd re-added a route through it (a bounce between two passes)
// arrives after the write: the route stays. Once the add's own notification
// has been read, a later down flushes it as the kernel does.
func TestMirrorLinkDownBeforeOwnAdd(t *testing.T) {
	m := newMirror()
	apply := func(typ netlink.HeaderType, b []byte) {
		t.Helper()
		if _, err := m.apply(typ, 0, b); err != nil {
			t.Fatal(err)
		}
	}
	routes := func() int { return len(m.snapshot().Routes) }
	apply(unix.RTM_NEWLINK, linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", up))
	route := testRoute{table: 200, dst: "0.0.0.0/0", proto: policy.Protocol, oifs: []int32{5}}
	tmsg := routeMsg(t, route)
	h, err := decodeRouteHeader(tmsg)
	if err != nil {
		t.Fatal(err)
	}
	mr, err := decodeRoute(tmsg, h, 200)
	if err != nil {
		t.Fatal(err)
	}
	m.addRouteWritten(&mr, false)
	// The down and up that happened before the add, read after it.
	apply(unix.RTM_NEWLINK, linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", 0))
	apply(unix.RTM_NEWLINK, linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", up))
	if n := routes(); n != 1 {
		t.Fatalf("a down older than the add flushed the route: %d routes", n)
	}
	apply(unix.RTM_NEWROUTE, tmsg) // the add's notification
	apply(unix.RTM_NEWLINK, linkMsg(t, unix.AF_UNSPEC, 5, "ppp0", 0))
	if n := routes(); n != 0 {
		t.Fatalf("a down after the add kept the route: %d routes", n)
	}
}

// TestDecodeAddrPreferredLifetime: an IPv6 address whose preferred
// lifetime is 0 decodes as deprecated even before the kernel sets
// IFA_F_DEPRECATED (a router advertisement deprecating its prefix is
// notified so); a running lifetime or an IPv4 address is not deprecated.
func TestDecodeAddrPreferredLifetime(t *testing.T) {
	msg := func(family uint8, p string, preferred uint32) []byte {
		pfx := netip.MustParsePrefix(p)
		hdr := []byte{family, byte(pfx.Bits()), 0, unix.RT_SCOPE_UNIVERSE, 7, 0, 0, 0}
		ci := make([]byte, unix.SizeofIfaCacheinfo)
		binary.NativeEndian.PutUint32(ci, preferred)
		binary.NativeEndian.PutUint32(ci[4:], 3600)
		return encode(t, hdr, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(unix.IFA_ADDRESS, pfx.Addr().AsSlice())
			ae.Bytes(unix.IFA_CACHEINFO, ci)
		})
	}
	for _, tc := range []struct {
		family     uint8
		p          string
		preferred  uint32
		deprecated bool
	}{
		{unix.AF_INET6, "2001:db8::a/64", 0, true},
		{unix.AF_INET6, "2001:db8::a/64", 1800, false},
		{unix.AF_INET6, "2001:db8::a/64", 0xffffffff, false},
		{unix.AF_INET, "192.0.2.1/24", 0, false},
	} {
		a, ok, err := decodeAddr(msg(tc.family, tc.p, tc.preferred))
		if err != nil || !ok {
			t.Fatalf("%s: decode: ok %v, %v", tc.p, ok, err)
		}
		if got := a.flags&unix.IFA_F_DEPRECATED != 0; got != tc.deprecated {
			t.Errorf("%s preferred %d: deprecated %v, want %v", tc.p, tc.preferred, got, tc.deprecated)
		}
	}
}
