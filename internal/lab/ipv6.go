package lab

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPv6 in the lab (Spec.IPv6): every namespace keeps IPv6 on, without
// duplicate address detection (accept_dad 0: addresses are usable at once,
// a test that wants DAD turns it on for one interface), and each uplink
// gets a global /64 besides its IPv4 subnet:
//
//	uplink i:  ISP 2001:db8:i::1 and fe80::1 on cust0, router 2001:db8:i::a, ::b, ... (one per dial)
//	ISP i ↔ inet: fd00:18:i::1 (ISP) / fd00:18:i::2 (inet)
//	inet hosts: InetHosts6 on lo
//
// No router advertisements are sent unless a test starts radvd (StartRA,
// radvd.go): otherwise the router's IPv6 default routes are
// uplinkd's, or a test's (a `proto ra` route added by hand stands for the
// kernel's own).

// InetHosts6 are the IPv6 addresses that answer in the inet namespace.
var InetHosts6 = []netip.Addr{
	netip.MustParseAddr("2001:db8:ffff::1"),
	netip.MustParseAddr("2001:db8:ffff::2"),
}

// ISPLinkLocal is the link-local address of every ISP end (cust0) in an
// IPv6 lab: a fixed router address, as an ISP's RAs would announce it.
var ISPLinkLocal = netip.MustParseAddr("fe80::1")

// CustomerPrefix6 is the IPv6 customer prefix of uplink i: 2001:db8:i::/64.
func CustomerPrefix6(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/64", i))
}

// ISPAddr6Of is the global IPv6 address of the ISP end of uplink i.
func ISPAddr6Of(i int) netip.Addr { return CustomerPrefix6(i).Addr().Next() }

// RouterAddr6Of is the router-side IPv6 address of uplink i after dials
// previous dials: 2001:db8:i::a, ::b, ... (host numbers as for IPv4).
func RouterAddr6Of(i, dials int) netip.Addr {
	a := CustomerPrefix6(i).Addr().As16()
	host := firstHost + dials%(lastHost-firstHost+1)
	a[15] = byte(host)
	return netip.AddrFrom16(a)
}

// ipv6Sysctls are what addNS sets in a namespace of an IPv6 lab.
var ipv6Sysctls = map[string]string{
	"net.ipv6.conf.all.disable_ipv6":     "0",
	"net.ipv6.conf.default.disable_ipv6": "0",
	"net.ipv6.conf.all.accept_dad":       "0",
	"net.ipv6.conf.default.accept_dad":   "0",
}

// nodad adds an IPv6 address without duplicate address detection.
func nodad(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: ipnet(p), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

// buildInet6 puts InetHosts6 on the inet namespace's lo.
func (l *Lab) buildInet6() error {
	lo, err := l.inet.h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	for _, a := range InetHosts6 {
		if err := nodad(l.inet.h, lo, netip.PrefixFrom(a, 128)); err != nil {
			return err
		}
	}
	return nil
}

// buildISP6 addresses the ISP ↔ inet link and routes the customer prefix
// of uplink u both ways.
func (l *Lab) buildISP6(u *uplink, wan, iv netlink.Link) error {
	ispWAN := netip.MustParseAddr(fmt.Sprintf("fd00:18:%x::1", u.idx))
	inetSide := netip.MustParseAddr(fmt.Sprintf("fd00:18:%x::2", u.idx))
	if err := nodad(u.isp.h, wan, netip.PrefixFrom(ispWAN, 64)); err != nil {
		return err
	}
	if err := nodad(l.inet.h, iv, netip.PrefixFrom(inetSide, 64)); err != nil {
		return err
	}
	// keep_addr_on_down: SetCarrier takes the ISP's end of the link down,
	// which would drop its IPv6 addresses (the router's link-local one
	// among them) and leave IPv6 dead after the carrier comes back.
	if err := sysctlIn(u.isp.name, map[string]string{"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.all.keep_addr_on_down": "1"}); err != nil {
		return err
	}
	if err := sysctlIn(l.inet.name, map[string]string{"net.ipv6.conf.all.forwarding": "1"}); err != nil {
		return err
	}
	if err := addRoute(u.isp.h, &netlink.Route{LinkIndex: wan.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("::/0")), Gw: inetSide.AsSlice()}); err != nil {
		return err
	}
	return addRoute(l.inet.h, &netlink.Route{LinkIndex: iv.Attrs().Index, Dst: ipnet(CustomerPrefix6(u.idx)), Gw: ispWAN.AsSlice()})
}

// dial6 addresses a freshly dialled uplink: the ISP end first, the router
// end last (its RTM_NEWADDR is what uplinkd reacts to).
func (l *Lab) dial6(u *uplink, v, peer netlink.Link) (netip.Addr, error) {
	if err := nodad(u.isp.h, peer, netip.PrefixFrom(ISPAddr6Of(u.idx), 64)); err != nil {
		return netip.Addr{}, err
	}
	if err := nodad(u.isp.h, peer, netip.PrefixFrom(ISPLinkLocal, 64)); err != nil {
		return netip.Addr{}, err
	}
	a := RouterAddr6Of(u.idx, u.dials)
	if err := nodad(l.router.h, v, netip.PrefixFrom(a, 64)); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

// relinkLocal6 puts ISPLinkLocal back on the ISP end after SetCarrier
// took it down: the kernel drops link-local addresses on down even with
// keep_addr_on_down, and the router address must stay the one its RAs and
// gateway6 name.
func relinkLocal6(u *uplink, peer netlink.Link) error {
	p := netip.PrefixFrom(ISPLinkLocal, 64)
	if err := u.isp.h.AddrReplace(peer, &netlink.Addr{IPNet: ipnet(p), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, CustIface, err)
	}
	return nil
}

// UplinkAddr6 returns the router-side global IPv6 address of uplink name,
// or the zero Addr if the link is dropped or the lab has no IPv6.
func (l *Lab) UplinkAddr6(name string) netip.Addr {
	return l.addrOf(name, true, func(u *uplink) netip.Addr { return u.addr6 })
}

// ISPAddr6 returns the global IPv6 address of the ISP end of uplink name.
func (l *Lab) ISPAddr6(name string) netip.Addr {
	return l.addrOf(name, false, func(u *uplink) netip.Addr { return ISPAddr6Of(u.idx) })
}

// blackhole6Table drops IPv6 from and to the customer link except
// neighbour discovery: the uplink's IPv6 upstream fails while IPv4 and the
// link itself work.
const blackhole6Table = "lab_blackhole6"

var blackhole6Ruleset = strings.NewReplacer("IF", CustIface).Replace(`table ip6 ` + blackhole6Table + ` {
	chain input { type filter hook input priority -300; policy accept; iifname "IF" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept; iifname "IF" drop; }
	chain forward { type filter hook forward priority -300; policy accept; iifname "IF" drop; oifname "IF" drop; }
	chain output { type filter hook output priority -300; policy accept; oifname "IF" icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept; oifname "IF" drop; }
}
`)

// Blackhole6 makes the ISP of uplink name drop IPv6 traffic of the
// customer link (not neighbour discovery) while IPv4 flows; needs nft.
func (l *Lab) Blackhole6(name string, on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return err
	}
	if on {
		_, err = execIn(u.isp.name, strings.NewReader(blackhole6Ruleset), "nft", "-f", "-")
	} else {
		_, err = execIn(u.isp.name, nil, "nft", "delete", "table", "ip6", blackhole6Table)
	}
	if err != nil {
		return fmt.Errorf("lab: blackhole6 %s on=%v: %w", name, on, err)
	}
	return nil
}

// DelegatedPrefix6 is the IPv6 prefix the ISP of uplink i delegates to the
// router in a test of [lan.ipv6] (Delegate6): 2001:db8:8000::/56 plus i
// times 0x100 in the third group (i < 128), clear of the customer /64s.
func DelegatedPrefix6(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::/56", 0x8000+i*0x100))
}

// Delegate6 makes the ISP of uplink name delegate DelegatedPrefix6 of the
// uplink to the router, as a DHCPv6-PD server does: the ISP routes the
// prefix to the router's current address on the link, the inet namespace
// routes it to the ISP. Telling uplinkd is the test's part (`uplinkd
// event --delegated` or delegated_prefix). The routes go with the lab; a
// redial leaves the ISP's route behind its old address (call again).
func (l *Lab) Delegate6(name string) (netip.Prefix, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !l.spec.IPv6 || !u.addr6.IsValid() {
		return netip.Prefix{}, fmt.Errorf("lab: delegate6 %s: the uplink has no IPv6 address", name)
	}
	p := DelegatedPrefix6(u.idx)
	cust, err := u.isp.h.LinkByName(CustIface)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("lab: delegate6 %s: %w", name, err)
	}
	if err := u.isp.h.RouteReplace(&netlink.Route{LinkIndex: cust.Attrs().Index, Dst: ipnet(p), Gw: u.addr6.AsSlice()}); err != nil {
		return netip.Prefix{}, fmt.Errorf("lab: delegate6 %s: ISP route: %w", name, err)
	}
	ispWAN := netip.MustParseAddr(fmt.Sprintf("fd00:18:%x::1", u.idx))
	if err := l.inet.h.RouteReplace(&netlink.Route{Dst: ipnet(p), Gw: ispWAN.AsSlice()}); err != nil {
		return netip.Prefix{}, fmt.Errorf("lab: delegate6 %s: inet route: %w", name, err)
	}
	return p, nil
}

// AddLAN6 numbers the LAN with the /64 p: the router's lan0 gets p::1 and
// the LAN client p::2 (no DAD), and the client's IPv6 default route goes
// via the router's p::1. It returns the client's address.
func (l *Lab) AddLAN6(p netip.Prefix) (netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.spec.IPv6 || p.Bits() != 64 || !p.Addr().Is6() {
		return netip.Addr{}, fmt.Errorf("lab: AddLAN6 %s: needs an IPv6 lab and a /64", p)
	}
	router := p.Masked().Addr().Next()
	client := router.Next()
	rl, err := l.router.h.LinkByName(LANIface)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lab: router %s: %w", LANIface, err)
	}
	cl, err := l.lan.h.LinkByName(ClientIface)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lab: lan %s: %w", ClientIface, err)
	}
	if err := nodad(l.router.h, rl, netip.PrefixFrom(router, 64)); err != nil {
		return netip.Addr{}, err
	}
	if err := nodad(l.lan.h, cl, netip.PrefixFrom(client, 64)); err != nil {
		return netip.Addr{}, err
	}
	// The newest LAN address of the router is the client's gateway.
	def := &netlink.Route{LinkIndex: cl.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("::/0")), Gw: router.AsSlice()}
	if err := l.lan.h.RouteReplace(def); err != nil {
		return netip.Addr{}, fmt.Errorf("lab: lan default route: %w", err)
	}
	return client, nil
}

// AddSideNet6 adds a network behind the router that no ISP routes (a
// second LAN, a VPN's far side): a namespace "<id>-sideN" joined to the
// router by a veth, the router's end "sideN" numbered p::1 and the host's
// "eth0" p::2 (no DAD), the host's IPv6 default route via p::1. The
// router's main table reaches p by its connected route alone. It returns
// the namespace and the host's address; both go with the lab.
func (l *Lab) AddSideNet6(p netip.Prefix) (ns string, host netip.Addr, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", netip.Addr{}, ErrClosed
	}
	if !l.spec.IPv6 || p.Bits() != 64 || !p.Addr().Is6() {
		return "", netip.Addr{}, fmt.Errorf("lab: AddSideNet6 %s: needs an IPv6 lab and a /64", p)
	}
	name := fmt.Sprintf("side%d", l.sides)
	s, err := l.addNS(l.id + "-" + name) // recorded at once: Close removes it
	if err != nil {
		return "", netip.Addr{}, err
	}
	l.sides++
	rl, hl, err := addVeth(l.router, name, nil, s, ClientIface, nil, l.nextFarIndex())
	if err != nil {
		return "", netip.Addr{}, err
	}
	router := p.Masked().Addr().Next()
	host = router.Next()
	for _, a := range []struct {
		h    *netlink.Handle
		link netlink.Link
		addr netip.Addr
	}{{l.router.h, rl, router}, {s.h, hl, host}} {
		if err := nodad(a.h, a.link, netip.PrefixFrom(a.addr, 64)); err != nil {
			return "", netip.Addr{}, err
		}
		if err := a.h.LinkSetUp(a.link); err != nil {
			return "", netip.Addr{}, fmt.Errorf("lab: set %s up: %w", a.link.Attrs().Name, err)
		}
	}
	def := &netlink.Route{LinkIndex: hl.Attrs().Index, Dst: ipnet(netip.MustParsePrefix("::/0")), Gw: router.AsSlice()}
	if err := addRoute(s.h, def); err != nil {
		return "", netip.Addr{}, err
	}
	return s.name, host, nil
}

// LANSubnet6For is the first /64 of a delegated prefix, the LAN's in a
// lab test.
func LANSubnet6For(p netip.Prefix) (netip.Prefix, bool) {
	if p.Bits() > 64 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(p.Masked().Addr(), 64), true
}
