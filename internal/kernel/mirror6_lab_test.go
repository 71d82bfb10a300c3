package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
	"github.com/uplinkd/uplinkd/policy"
)

// TestMirrorMatchesDump6 is TestMirrorMatchesDump for IPv6: after each kind
// of change the mirror's IPv6 addresses (with their DAD and lifetime
// states), routes and rules equal a fresh dump read by another parser.
func TestMirrorMatchesDump6(t *testing.T) {
	f := newFixtureSpec(t, true, 0, true)
	eth1 := f.link("eth1")
	ppp0 := f.link("ppp0")
	check := func(step string) policy.Observed {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			got := f.sync()
			want := dumpObserved6(t, f.h, map[int]bool{unix.RT_TABLE_MAIN: true, tableA: true, tableB: true})
			if g, w := render6(got), render6(want); g == w || time.Now().After(deadline) {
				if g != w {
					t.Fatalf("after %s: mirror differs from a fresh dump\n--- mirror\n%s--- dump\n%s", step, g, w)
				}
				return got
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	obs := check("initial")
	if a := f.l.UplinkAddr6("eth1"); !slices.ContainsFunc(obs.Addrs6["eth1"], func(x policy.Addr) bool { return x.Prefix.Addr() == a && x.Usable6() }) {
		t.Fatalf("eth1's %s is not a usable address in the mirror: %v", a, obs.Addrs6["eth1"])
	}

	gw := lab.ISPLinkLocal.AsSlice()
	route := func(r netlink.Route) *netlink.Route {
		r.Family = unix.AF_INET6
		if r.Dst == nil {
			r.Dst = ipn6("::/0")
		}
		return &r
	}
	for _, r := range []*netlink.Route{
		// the kernel's RA route stands in as `proto ra` (9)
		route(netlink.Route{LinkIndex: eth1.Attrs().Index, Gw: gw, Protocol: unix.RTPROT_RA}),
		route(netlink.Route{LinkIndex: ppp0.Attrs().Index, Table: tableA, Protocol: policy.Protocol}),
		route(netlink.Route{Table: tableB, Protocol: policy.Protocol, MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: eth1.Attrs().Index, Gw: gw}, {LinkIndex: ppp0.Attrs().Index, Gw: gw, Hops: 2}}}),
		route(netlink.Route{LinkIndex: eth1.Attrs().Index, Gw: gw, Table: foreignT}),
		route(netlink.Route{Dst: ipn6("2001:db8:99::/48"), LinkIndex: eth1.Attrs().Index, Gw: gw, Table: foreignT}),
	} {
		f.must(f.h.RouteAdd(r), "route add "+r.String())
	}
	obs = check("routes added")
	if slices.ContainsFunc(obs.Routes, func(r policy.Route) bool { return r.Table == foreignT && r.Dst.Bits() != 0 }) {
		t.Fatal("a non-default IPv6 route of a foreign table is in the mirror")
	}
	ra := slices.IndexFunc(obs.Routes, func(r policy.Route) bool { return r.IPv6() && r.Table == unix.RT_TABLE_MAIN && r.Dst.Bits() == 0 })
	if ra < 0 || obs.Routes[ra].Protocol != unix.RTPROT_RA {
		t.Fatalf("the proto ra default route is not in the mirror as foreign: %v", obs.Routes)
	}

	// [lan.ipv6] mode prefix's rule for a delegated prefix (policy/lan6.go).
	lan6Main := policy.Rule{IPv6: true, Priority: 1499, Table: unix.RT_TABLE_MAIN, Src: netip.MustParsePrefix("2001:db8:8000::/56"),
		SuppressDefault: true, Protocol: policy.Protocol}
	for _, r := range []policy.Rule{
		{IPv6: true, Priority: 1500, Table: tableA, Src: netip.PrefixFrom(f.l.UplinkAddr6("ppp0"), 128), Protocol: policy.Protocol},
		{IPv6: true, Priority: 1501, Table: unix.RT_TABLE_MAIN, SuppressDefault: true, Protocol: policy.Protocol},
		lan6Main,
	} {
		f.must(f.h.RuleAdd(NetlinkRule(r)), "rule add")
	}
	obs = check("rules added")
	if !slices.ContainsFunc(obs.Rules, func(r policy.Rule) bool { return r.IPv6 && r.Priority == 1500 }) {
		t.Fatal("the IPv6 source rule is not in the mirror")
	}
	// A source and suppress_prefixlength together read back as written,
	// so the next diff finds the rule instead of adding it again.
	if !slices.ContainsFunc(obs.Rules, func(r policy.Rule) bool { return r.Key() == lan6Main.Key() }) {
		t.Fatalf("the rule %s is not in the mirror as written: %v", lan6Main.IPRule(), obs.Rules)
	}

	// An address under duplicate address detection is tentative, then not.
	f.must(f.l.Sysctl(f.l.Router, "net.ipv6.conf.eth1.accept_dad", "1"), "accept_dad")
	f.must(f.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipn6("2001:db8:77::5/64")}), "add address with DAD")
	check("address under DAD")
	// Deprecated: preferred lifetime 0.
	f.must(f.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipn6("2001:db8:78::5/64"), Flags: unix.IFA_F_NODAD, PreferedLft: 0, ValidLft: 3600}), "add deprecated address")
	obs = check("deprecated address")
	if i := slices.IndexFunc(obs.Addrs6["eth1"], func(a policy.Addr) bool { return a.Prefix.Addr() == netip.MustParseAddr("2001:db8:78::5") }); i < 0 || obs.Addrs6["eth1"][i].Usable6() {
		t.Fatalf("the deprecated address is missing or usable: %v", obs.Addrs6["eth1"])
	}
	f.must(f.h.AddrDel(eth1, &netlink.Addr{IPNet: ipn6("2001:db8:78::5/64")}), "delete address")
	check("address deleted")

	// Link down and up: the kernel drops the IPv6 routes via eth1.
	f.must(f.h.LinkSetDown(eth1), "eth1 down")
	check("eth1 down")
	f.must(f.h.LinkSetUp(eth1), "eth1 up")
	check("eth1 up")
	// Carrier loss: IPv6 keeps its routes and addresses.
	if _, err := f.l.SetCarrier("ppp0", false); err != nil {
		t.Fatal(err)
	}
	check("ppp0 carrier lost")
	if _, err := f.l.SetCarrier("ppp0", true); err != nil {
		t.Fatal(err)
	}
	// A redial: the link and everything via it go; a new address comes.
	old := f.l.UplinkAddr6("ppp0")
	if _, err := f.l.Redial("ppp0"); err != nil {
		t.Fatal(err)
	}
	obs = check("redial")
	if slices.ContainsFunc(obs.Addrs6["ppp0"], func(a policy.Addr) bool { return a.Prefix.Addr() == old }) {
		t.Fatal("redial kept the old IPv6 address")
	}
}

// TestMirrorIPv6Off: with IPv6 off the mirror keeps no IPv6 address and no
// foreign IPv6 route or rule, but uplinkd's own (left by a run with ipv6
// on), so they can be removed.
func TestMirrorIPv6Off(t *testing.T) {
	f := newFixtureSpec(t, true, 0, false)
	f.must(f.l.Sysctl(f.l.Router, "net.ipv6.conf.all.disable_ipv6", "0"), "enable IPv6")
	f.must(f.l.Sysctl(f.l.Router, "net.ipv6.conf.eth1.disable_ipv6", "0"), "enable IPv6 on eth1")
	eth1 := f.link("eth1")
	f.must(f.h.AddrAdd(eth1, &netlink.Addr{IPNet: ipn6("2001:db8:77::5/64"), Flags: unix.IFA_F_NODAD}), "add address")
	own := &netlink.Route{Family: unix.AF_INET6, Dst: ipn6("::/0"), LinkIndex: eth1.Attrs().Index, Table: tableA, Protocol: policy.Protocol}
	foreign := &netlink.Route{Family: unix.AF_INET6, Dst: ipn6("::/0"), LinkIndex: eth1.Attrs().Index, Table: tableB}
	f.must(f.h.RouteAdd(own), "own route")
	f.must(f.h.RouteAdd(foreign), "foreign route")
	obs := f.sync()
	if len(obs.Addrs6) != 0 {
		t.Fatalf("IPv6 addresses in a mirror with IPv6 off: %v", obs.Addrs6)
	}
	var v6 []string
	for _, r := range obs.Routes {
		if r.IPv6() {
			v6 = append(v6, r.IPRoute())
		}
	}
	if want := []string{"default dev eth1 table 1000 proto 157 metric 1024"}; !slices.Equal(v6, want) {
		t.Fatalf("IPv6 routes = %q, want %q (only uplinkd's own)", v6, want)
	}
	// After a resync too.
	f.k.Resync()
	obs, err := f.k.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(slices.DeleteFunc(obs.Routes, func(r policy.Route) bool { return !r.IPv6() })); n != 1 {
		t.Fatalf("%d IPv6 routes after a dump, want 1", n)
	}
}

func ipn6(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}
}

// render6 prints the IPv6 part of an Observed in a canonical order.
func render6(o policy.Observed) string {
	var lines []string
	for name, as := range o.Addrs6 {
		for _, a := range as {
			lines = append(lines, fmt.Sprintf("addr %s %s peer=%s flags=%d", name, a.Prefix, a.Peer, a.Flags))
		}
	}
	for _, r := range o.Routes {
		if r.IPv6() {
			lines = append(lines, "route "+r.IPRoute())
		}
	}
	for _, r := range o.Rules {
		if r.IPv6 {
			lines = append(lines, fmt.Sprintf("rule %s mask=%#x extra=%q", r.IPRule(), r.Mask, r.Extra))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// dumpObserved6 reads the IPv6 state through vishvananda/netlink, filtered
// as the mirror keeps it.
func dumpObserved6(t *testing.T, h *netlink.Handle, tables map[int]bool) policy.Observed {
	t.Helper()
	obs := policy.Observed{Addrs6: map[string][]policy.Addr{}}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := h.AddrList(nil, unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Scope == unix.RT_SCOPE_HOST || names[a.LinkIndex] == "" {
			continue
		}
		ones, _ := a.Mask.Size()
		ip, _ := netip.AddrFromSlice(a.IP)
		pa := policy.Addr{Prefix: netip.PrefixFrom(ip, ones)}
		if a.Peer != nil {
			pa.Peer, _ = netip.AddrFromSlice(a.Peer.IP)
		}
		for bit, f := range map[int]policy.AddrFlags{unix.IFA_F_TENTATIVE: policy.AddrTentative, unix.IFA_F_DEPRECATED: policy.AddrDeprecated, unix.IFA_F_DADFAILED: policy.AddrDADFailed} {
			if a.Flags&bit != 0 {
				pa.Flags |= f
			}
		}
		obs.Addrs6[names[a.LinkIndex]] = append(obs.Addrs6[names[a.LinkIndex]], pa)
	}
	routes, err := h.RouteListFiltered(unix.AF_INET6, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Table == unix.RT_TABLE_LOCAL {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		if r.Dst != nil {
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			dst = netip.PrefixFrom(ip, ones)
		}
		if !tables[r.Table] && dst.Bits() != 0 && int(r.Protocol) != policy.Protocol {
			continue
		}
		out := policy.Route{Table: r.Table, Metric: r.Priority, Protocol: int(r.Protocol), ScopeLink: r.Scope == netlink.SCOPE_LINK, Dst: dst}
		if len(r.MultiPath) > 0 {
			for _, nh := range r.MultiPath {
				gw, _ := netip.AddrFromSlice(nh.Gw)
				out.Nexthops = append(out.Nexthops, policy.Nexthop{Gateway: gw, Dev: names[nh.LinkIndex], Weight: nh.Hops + 1})
			}
		} else {
			gw, _ := netip.AddrFromSlice(r.Gw)
			out.Nexthops = []policy.Nexthop{{Gateway: gw, Dev: names[r.LinkIndex], Weight: 1}}
		}
		obs.Routes = append(obs.Routes, out)
	}
	rules, err := h.RuleList(unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		out := policy.Rule{IPv6: true, Priority: r.Priority, Table: r.Table, Mark: r.Mark, Protocol: int(r.Protocol),
			SuppressDefault: r.SuppressPrefixlen == 0}
		if r.Src != nil {
			ip, _ := netip.AddrFromSlice(r.Src.IP)
			ones, _ := r.Src.Mask.Size()
			out.Src = netip.PrefixFrom(ip, ones)
		}
		obs.Rules = append(obs.Rules, out)
	}
	return obs
}
