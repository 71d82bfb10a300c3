package kernel

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }

// The tables the tests tell the mirror about, and a foreign one.
const (
	tableA   = 1000
	tableB   = 1001
	foreignT = 2000
)

// fixture is a lab router namespace with a mirror following it.
type fixture struct {
	t   *testing.T
	l   *lab.Lab
	ns  netns.NsHandle
	h   *netlink.Handle // the test's own hand on the router namespace
	k   *Kernel
	seq int
}

func newFixture(t *testing.T) *fixture { return newFixtureRun(t, true) }

// newFixtureRun with run false has no subscription: the mirror then changes
// only by its dump and uplinkd's own writes.
func newFixtureRun(t *testing.T, run bool) *fixture { return newFixtureBuffer(t, run, 0) }

// newFixtureBuffer: readBuffer > 0 is the subscription's receive buffer.
func newFixtureBuffer(t *testing.T, run bool, readBuffer int) *fixture {
	return newFixtureSpec(t, run, readBuffer, false)
}

// newFixtureSpec: ipv6 builds an IPv6 lab and turns the mirror's IPv6 on.
func newFixtureSpec(t *testing.T, run bool, readBuffer int, ipv6 bool) *fixture {
	l := lab.NewT(t, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: lab.KindPPP}, {Name: "eth1", Kind: lab.KindEthernet}}, IPv6: ipv6})
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	k, err := Open(ns, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	k.SetTables([]int{tableA, tableB})
	k.SetIPv6(ipv6)
	k.readBuffer = readBuffer
	if !run {
		t.Cleanup(func() { k.Close() })
		if _, err := k.Snapshot(); err != nil {
			t.Fatal(err)
		}
		return &fixture{t: t, l: l, ns: ns, h: h, k: k}
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan watcher.Event, 1024)
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx, events) }()
	// The mirror dumps on the first snapshot after the subscription is in
	// place, which the first event (KindResync) says.
	select {
	case ev := <-events:
		if ev.Kind != watcher.KindResync {
			t.Fatalf("first event %v, want resync", ev.Kind)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no resync event")
	}
	go func() {
		for range events {
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		close(events)
		k.Close()
	})
	if _, err := k.Snapshot(); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, l: l, ns: ns, h: h, k: k}
}

func (f *fixture) link(name string) netlink.Link {
	f.t.Helper()
	l, err := f.h.LinkByName(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

func (f *fixture) must(err error, what string) {
	f.t.Helper()
	if err != nil {
		f.t.Fatalf("%s: %v", what, err)
	}
}

// mirrorOnly reads the mirror without the dump a stale mirror would do.
func (f *fixture) mirrorOnly() policy.Observed {
	f.t.Helper()
	f.k.m.mu.Lock()
	defer f.k.m.mu.Unlock()
	if f.k.m.stale {
		f.t.Fatalf("mirror went stale (%v)", f.k.m.err)
	}
	return f.k.m.snapshot()
}

// sync adds a marker rule and waits until the mirror has it: notifications
// are delivered in order, so every change before the marker is then in the
// mirror too.
func (f *fixture) sync() policy.Observed {
	f.t.Helper()
	f.seq++
	prio := 20000 + f.seq
	r := netlink.NewRule()
	r.Family, r.Priority, r.Table = unix.AF_INET, prio, 3000
	f.must(f.h.RuleAdd(r), "marker rule")
	deadline := time.Now().Add(5 * time.Second)
	for {
		obs := f.mirrorOnly()
		if slices.ContainsFunc(obs.Rules, func(r policy.Rule) bool { return r.Priority == prio }) {
			return obs
		}
		if time.Now().After(deadline) {
			f.t.Fatal("marker rule never reached the mirror")
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// check compares the mirror with a fresh dump read by another
// implementation (vishvananda/netlink's parser). A few retries allow for
// notifications the kernel sends late on purpose (linkwatch batches carrier
// changes, so a dump can show IFF_LOWER_UP gone before RTM_NEWLINK says so);
// a mirror that is wrong (a silent flush not modelled) never converges.
func (f *fixture) check(step string) policy.Observed {
	f.t.Helper()
	// Until a deadline, not a number of tries: linkwatch alone may hold a
	// notification back for a second, longer on a busy machine.
	for deadline := time.Now().Add(20 * time.Second); ; {
		got := f.sync()
		want := dumpObserved(f.t, f.h, map[int]bool{unix.RT_TABLE_MAIN: true, tableA: true, tableB: true})
		if g, w := render(got), render(want); g == w || time.Now().After(deadline) {
			return f.compare(step, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fixture) compare(step string, got, want policy.Observed) policy.Observed {
	f.t.Helper()
	if g, w := render(got), render(want); g != w {
		f.t.Fatalf("after %s: mirror differs from a fresh dump\n--- mirror\n%s--- dump\n%s", step, g, w)
	}
	return got
}

// checkNow compares without waiting for notifications (the fixture without
// a subscription).
func (f *fixture) checkNow(step string) policy.Observed {
	f.t.Helper()
	return f.compare(step, f.mirrorOnly(), dumpObserved(f.t, f.h, map[int]bool{unix.RT_TABLE_MAIN: true, tableA: true, tableB: true}))
}

// render prints an Observed in a canonical order, bounces left out (a dump
// cannot know them).
func render(o policy.Observed) string {
	var lines []string
	for _, l := range o.Links {
		lines = append(lines, fmt.Sprintf("link %s index=%d up=%v carrier=%v p2p=%v", l.Name, l.Index, l.Up, l.Carrier, l.PointToPoint))
	}
	for name, as := range o.Addrs {
		lines = append(lines, fmt.Sprintf("addrs %s %v", name, as))
	}
	for _, r := range o.Routes {
		lines = append(lines, "route "+r.IPRoute())
	}
	for _, r := range o.Rules {
		lines = append(lines, fmt.Sprintf("rule %s mask=%#x extra=%q", r.IPRule(), r.Mask, r.Extra))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// dumpObserved is how uplinkd read the kernel before the mirror: four dumps
// through vishvananda/netlink, filtered to the routes the mirror keeps.
func dumpObserved(t *testing.T, h *netlink.Handle, tables map[int]bool) policy.Observed {
	t.Helper()
	obs := policy.Observed{Links: map[string]policy.Link{}, Addrs: map[string][]policy.Addr{}}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		a := l.Attrs()
		names[a.Index] = a.Name
		obs.Links[a.Name] = policy.Link{Index: a.Index, Name: a.Name, Up: a.Flags&net.FlagUp != 0,
			Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0, PointToPoint: a.RawFlags&unix.IFF_POINTOPOINT != 0}
	}
	addrs, err := h.AddrList(nil, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE || names[a.LinkIndex] == "" {
			continue
		}
		p := pfx(a.IPNet)
		ad := policy.Addr{Prefix: p}
		if a.Peer != nil {
			ad.Peer, _ = netip.AddrFromSlice(a.Peer.IP.To4())
		}
		name := names[a.LinkIndex]
		if a.Flags&unix.IFA_F_SECONDARY != 0 {
			obs.Addrs[name] = append(obs.Addrs[name], ad)
		} else {
			obs.Addrs[name] = append([]policy.Addr{ad}, obs.Addrs[name]...)
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Dst != nil {
			dst = pfx(r.Dst)
		}
		if !tables[r.Table] && dst.Bits() != 0 && int(r.Protocol) != policy.Protocol {
			continue
		}
		out := policy.Route{Table: r.Table, Metric: r.Priority, Protocol: int(r.Protocol), ScopeLink: r.Scope == netlink.SCOPE_LINK, Dst: dst}
		if len(r.MultiPath) > 0 {
			for _, nh := range r.MultiPath {
				gw, _ := netip.AddrFromSlice(nh.Gw.To4())
				out.Nexthops = append(out.Nexthops, policy.Nexthop{Gateway: gw, Dev: names[nh.LinkIndex], Weight: nh.Hops + 1})
			}
		} else {
			gw, _ := netip.AddrFromSlice(r.Gw.To4())
			out.Nexthops = []policy.Nexthop{{Gateway: gw, Dev: names[r.LinkIndex], Weight: 1}}
		}
		obs.Routes = append(obs.Routes, out)
	}
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		out := policy.Rule{Priority: r.Priority, Table: r.Table, Mark: r.Mark, Protocol: int(r.Protocol)}
		if r.Mask != nil {
			out.Mask = *r.Mask
		}
		if r.Src != nil {
			out.Src = pfx(r.Src)
		}
		var extra []string
		if r.Dst != nil {
			extra = append(extra, "to "+r.Dst.String())
		}
		if r.IifName != "" {
			extra = append(extra, "iif "+r.IifName)
		}
		if r.OifName != "" {
			extra = append(extra, "oif "+r.OifName)
		}
		if r.UIDRange != nil {
			extra = append(extra, fmt.Sprintf("uidrange %d-%d", r.UIDRange.Start, r.UIDRange.End))
		}
		if r.Dport != nil || r.Sport != nil || r.IPProto != 0 {
			extra = append(extra, "l4")
		}
		out.SuppressDefault = r.SuppressPrefixlen == 0
		if r.Tos != 0 || r.Invert || r.Goto > 0 || r.SuppressPrefixlen > 0 || r.SuppressIfgroup >= 0 ||
			(r.Type != 0 && r.Type != unix.FR_ACT_TO_TBL) {
			extra = append(extra, "other")
		}
		out.Extra = strings.Join(extra, ",")
		obs.Rules = append(obs.Rules, out)
	}
	return obs
}

func pfx(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP.To4())
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

func ipn(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
