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
// No router advertisements are sent: the router's IPv6 default routes are
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
	if err := sysctlIn(u.isp.name, map[string]string{"net.ipv6.conf.all.forwarding": "1"}); err != nil {
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
