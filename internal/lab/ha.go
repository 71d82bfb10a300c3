package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// A Pair is two gateways on one LAN, the set-up of two-gateway HA
// (keepalived VRRP):
//
//	routerA, routerB  lan0 10.0.0.11/24 and 10.0.0.12/24, each with its own
//	                  uplinks and ISP namespaces (as in a lone lab)
//	lan               the LAN client: bridge br0 10.0.0.2/24 with one port
//	                  per router (portA, portB), default via PairVIP
//	inet              shared by both routers' ISPs
//
// Each router is a *Lab of its own (Routers[i]): Exec, Start, SetCarrier,
// Dial, DropLink, UplinkAddr and the rest work on it as on a lone lab, and
// its LAN and Inet fields name the pair's shared namespaces. The uplinks of
// router B are numbered after router A's in the address plan (uplink N:
// 100.64.N.0/24, 198.18.N.0/24), so no two uplinks share a subnet.
type Pair struct {
	Routers [2]*Lab
	// LAN and Inet are the shared namespaces.
	LAN, Inet string

	base *Lab // owns LAN and Inet
}

// PairSpec describes a Pair: the uplinks of router A and of router B.
type PairSpec struct {
	Uplinks [2][]UplinkSpec
}

var (
	// PairVIP is the virtual gateway address keepalived moves between the
	// routers; the LAN client's default route points at it.
	PairVIP = netip.MustParseAddr("10.0.0.1")
	// PairRouterAddrs are the routers' own LAN addresses.
	PairRouterAddrs = [2]netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")}
)

// PairBridge is the bridge in the LAN namespace that joins the routers.
const PairBridge = "br0"

// pairMember ties a lab to its pair.
type pairMember struct {
	base   *Lab // nil: this is the base (LAN and inet only)
	router int  // 0 or 1 for a router lab
	first  int  // the router's first uplink number in the address plan
}

// adopt adjusts a new lab of the pair before it is built. Far veth ends of
// the three labs land in shared namespaces, so each gets its own range of
// explicit ifindexes (see addVeth).
func (m *pairMember) adopt(l *Lab) {
	if m.base == nil {
		l.Router = ""
		l.farIndex = 2 << 16
		return
	}
	l.LAN, l.Inet = m.base.LAN, m.base.Inet
	l.farIndex = m.router << 16
}

func (l *Lab) uplinkBase() int {
	if l.member == nil {
		return 0
	}
	return l.member.first
}

// NewPair builds a Pair; on error everything created so far is removed.
func NewPair(spec PairSpec) (*Pair, error) {
	if n := len(spec.Uplinks[0]) + len(spec.Uplinks[1]); n > MaxUplinks {
		return nil, fmt.Errorf("lab: pair: %d uplinks, at most %d supported", n, MaxUplinks)
	}
	base, err := newLab(Spec{}, &pairMember{})
	if err != nil {
		return nil, err
	}
	p := &Pair{LAN: base.LAN, Inet: base.Inet, base: base}
	first := 0
	for i := range p.Routers {
		r, err := newLab(Spec{Uplinks: spec.Uplinks[i]}, &pairMember{base: base, router: i, first: first})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("lab: pair router %d: %w", i, err), p.Close())
		}
		p.Routers[i] = r
		first += len(spec.Uplinks[i])
	}
	return p, nil
}

// Close closes both routers, then the shared namespaces.
func (p *Pair) Close() error {
	var errs []error
	for _, r := range p.Routers {
		if r != nil {
			errs = append(errs, r.Close())
		}
	}
	return errors.Join(append(errs, p.base.Close())...)
}

// Namespaces returns every namespace of the pair.
func (p *Pair) Namespaces() []string {
	out := []string{p.LAN, p.Inet}
	for _, r := range p.Routers {
		out = append(out, r.Router)
		out = append(out, r.ISPs...)
	}
	return out
}

// buildMember builds a lab of a pair; l.mu is held.
func (l *Lab) buildMember() error {
	m := l.member
	var err error
	if m.base == nil {
		if l.lan, err = l.addNS(l.LAN); err != nil {
			return err
		}
		if l.inet, err = l.addNS(l.Inet); err != nil {
			return err
		}
		if err := sysctlIn(l.Inet, map[string]string{
			"net.ipv4.ip_forward":             "1",
			"net.ipv4.conf.all.rp_filter":     "0",
			"net.ipv4.conf.default.rp_filter": "0",
		}); err != nil {
			return err
		}
		if err := l.buildInet(); err != nil {
			return fmt.Errorf("inet: %w", err)
		}
		return l.buildBridge()
	}
	if l.router, err = l.addNS(l.Router); err != nil {
		return err
	}
	l.lan, l.inet = m.base.lan, m.base.inet
	return l.buildRest()
}

// buildBridge makes the LAN client a bridge with the client's address, so
// that both routers' lan0 and the client share one broadcast domain (VRRP
// adverts and gratuitous ARP reach everyone).
func (l *Lab) buildBridge() error {
	la := netlink.NewLinkAttrs()
	la.Name = PairBridge
	la.HardwareAddr = net.HardwareAddr{0x02, 0x75, 0x6c, 0x0a, 0x00, 0x02}
	br := &netlink.Bridge{LinkAttrs: la}
	if err := l.lan.h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	link, err := l.lan.h.LinkByName(PairBridge)
	if err != nil {
		return err
	}
	if err := addrUp(l.lan.h, link, prefixOf(LANClientAddr, 24), netip.Addr{}); err != nil {
		return err
	}
	return addRoute(l.lan.h, &netlink.Route{LinkIndex: link.Attrs().Index, Gw: PairVIP.AsSlice()})
}

// buildPairLAN connects a pair router's lan0 to a port of the LAN bridge.
func (l *Lab) buildPairLAN() error {
	i := byte(l.member.router)
	mac := net.HardwareAddr{0x02, 0x75, 0x6c, 0x0a, 0x01, 0x11 + i}
	portMAC := net.HardwareAddr{0x02, 0x75, 0x6c, 0x0a, 0x02, 0x11 + i}
	port := "port" + string(rune('A'+i))
	v, peer, err := addVeth(l.router, LANIface, mac, l.lan, port, portMAC, l.nextFarIndex())
	if err != nil {
		return err
	}
	br, err := l.lan.h.LinkByName(PairBridge)
	if err != nil {
		return err
	}
	if err := l.lan.h.LinkSetMaster(peer, br); err != nil {
		return fmt.Errorf("%s into %s: %w", port, PairBridge, err)
	}
	if err := l.lan.h.LinkSetUp(peer); err != nil {
		return err
	}
	return addrUp(l.router.h, v, prefixOf(PairRouterAddrs[i], 24), netip.Addr{})
}
