package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Router-side host numbers cycle through .10-.250 of the customer subnet, so
// every redial yields an address different from the previous one and never
// collides with the ISP end (.1).
const (
	firstHost = 10
	lastHost  = 250
)

// uplink is the lab's bookkeeping for one router uplink.
type uplink struct {
	spec UplinkSpec
	idx  int
	isp  *nsState

	dials      int        // number of dials so far; selects the next address
	addr       netip.Addr // router-side address; valid while the link exists
	addr6      netip.Addr // router-side global IPv6 address (IPv6 labs)
	last       netip.Addr // last address assigned, kept across DropLink
	present    bool       // the router-side link exists
	index      int        // router-side ifindex while present
	peerIndex  int        // ISP-side (cust0) ifindex while present
	blackholed bool
}

// RedialResult reports a link re-creation. Times are taken right after the
// netlink request that made the change was acknowledged, so benchmarks can
// measure how fast uplinkd reacts to the kernel event.
type RedialResult struct {
	Old, New  netip.Addr
	Deleted   time.Time // zero for a plain Dial
	AddrAdded time.Time
}

// CustomerPrefix is the customer subnet of uplink i: 100.64.i.0/24.
func CustomerPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i), 0}), 24)
}

// ISPAddrOf is the ISP end of uplink i: 100.64.i.1.
func ISPAddrOf(i int) netip.Addr { return netip.AddrFrom4([4]byte{100, 64, byte(i), 1}) }

// RouterAddrOf is the router-side address of uplink i after dials previous
// dials: 100.64.i.10, .11, ... wrapping within .10-.250.
func RouterAddrOf(i, dials int) netip.Addr {
	host := firstHost + dials%(lastHost-firstHost+1)
	return netip.AddrFrom4([4]byte{100, 64, byte(i), byte(host)})
}

// MACs are locally administered and derived from the uplink index so that
// captures are readable. A ppp-like link uses one MAC for both ends: with
// IFF_NOARP the kernel sends every frame to the device's own MAC, so the far
// end only accepts it (PACKET_HOST) if it has the very same address.
func (u *uplink) macs() (router, isp net.HardwareAddr) {
	router = net.HardwareAddr{0x02, 0x75, 0x6c, 0x64, byte(u.idx), 0x0a}
	if u.spec.Kind == KindPPP {
		return router, router
	}
	return router, net.HardwareAddr{0x02, 0x75, 0x6c, 0x64, byte(u.idx), 0x01}
}

func (l *Lab) uplinkLocked(name string) (*uplink, error) {
	if l.closed {
		return nil, ErrClosed
	}
	u, ok := l.uplinks[name]
	if !ok {
		return nil, fmt.Errorf("lab: no uplink %q", name)
	}
	return u, nil
}

// UplinkAddr returns the router-side address currently assigned to uplink
// name, or the zero Addr if the link is dropped (or the name is unknown).
func (l *Lab) UplinkAddr(name string) netip.Addr {
	return l.addrOf(name, true, func(u *uplink) netip.Addr { return u.addr })
}

// addrOf is f of uplink name under the lab's lock; the zero Addr for an
// unknown name, or (present) a dropped link.
func (l *Lab) addrOf(name string, present bool, f func(*uplink) netip.Addr) netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.uplinks[name]; ok && (u.present || !present) {
		return f(u)
	}
	return netip.Addr{}
}

// ISPAddr returns the ISP end of uplink name: the ppp peer, or the ethernet
// gateway. It is the zero Addr for an unknown name.
func (l *Lab) ISPAddr(name string) netip.Addr {
	return l.addrOf(name, false, func(u *uplink) netip.Addr { return ISPAddrOf(u.idx) })
}

// ISP returns the namespace of the ISP behind uplink name ("" if unknown).
func (l *Lab) ISP(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.uplinks[name]; ok {
		return u.isp.name
	}
	return ""
}

// UplinkIndex returns the position of uplink name in Spec.Uplinks, which is
// also the third octet of its addresses, or -1.
func (l *Lab) UplinkIndex(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.uplinks[name]; ok {
		return u.idx
	}
	return -1
}

// Uplinks returns the uplink specs the lab was built with.
func (l *Lab) Uplinks() []UplinkSpec { return append([]UplinkSpec(nil), l.spec.Uplinks...) }

// Redial does what pppd does when it redials: the router-side link goes away
// (taking its veth peer with it) and comes back with the next address.
func (l *Lab) Redial(name string) (RedialResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return RedialResult{}, err
	}
	deleted, err := l.dropLocked(u)
	if err != nil {
		return RedialResult{}, fmt.Errorf("lab: redial %s: %w", name, err)
	}
	res, err := l.dialLocked(u)
	if err != nil {
		return RedialResult{}, fmt.Errorf("lab: redial %s: %w", name, err)
	}
	res.Deleted = deleted
	return res, nil
}

// DropLink deletes the router-side link, as when pppd dies. The returned time
// is taken right after the kernel acknowledged the deletion.
func (l *Lab) DropLink(name string) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return time.Time{}, err
	}
	t, err := l.dropLocked(u)
	if err != nil {
		return time.Time{}, fmt.Errorf("lab: drop %s: %w", name, err)
	}
	return t, nil
}

// Dial re-creates a dropped link with the next address. Old is the address
// the link had before it was dropped.
func (l *Lab) Dial(name string) (RedialResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return RedialResult{}, err
	}
	res, err := l.dialLocked(u)
	if err != nil {
		return RedialResult{}, fmt.Errorf("lab: dial %s: %w", name, err)
	}
	return res, nil
}

func (l *Lab) dropLocked(u *uplink) (time.Time, error) {
	if !u.present {
		return time.Time{}, errors.New("link is not up (already dropped)")
	}
	la := netlink.NewLinkAttrs()
	la.Index = u.index // known index: LinkDel is then exactly one request
	if err := l.router.h.LinkDel(&netlink.Veth{LinkAttrs: la}); err != nil {
		return time.Time{}, fmt.Errorf("delete %s: %w", u.spec.Name, err)
	}
	t := time.Now()
	u.present, u.addr, u.addr6, u.index, u.peerIndex = false, netip.Addr{}, netip.Addr{}, 0, 0
	return t, nil
}

// dialLocked creates the veth pair for u and addresses it. The ISP end is
// made ready first so that the router-side address, whose RTM_NEWADDR is
// what uplinkd reacts to, is the last change: once AddrAdded is taken,
// traffic can flow.
func (l *Lab) dialLocked(u *uplink) (res RedialResult, err error) {
	if u.present {
		return res, errors.New("link already exists")
	}
	rmac, imac := u.macs()
	v, peer, err := addVeth(l.router, u.spec.Name, rmac, u.isp, CustIface, imac, l.nextFarIndex())
	if err != nil {
		return res, err
	}
	defer func() {
		if err != nil {
			// Leave no half-configured link behind; the next Dial starts over.
			_ = u.isp.h.LinkDel(peer)
		}
	}()
	ppp := u.spec.Kind == KindPPP
	newAddr := RouterAddrOf(u.idx, u.dials)
	ispAddr := ISPAddrOf(u.idx)
	if ppp {
		if err := u.isp.h.LinkSetARPOff(peer); err != nil {
			return res, fmt.Errorf("arp off %s/%s: %w", u.isp.name, CustIface, err)
		}
		if err := l.router.h.LinkSetARPOff(v); err != nil {
			return res, fmt.Errorf("arp off %s: %w", u.spec.Name, err)
		}
	}
	// ISP end: address, then up.
	ispPrefix, routerPrefix, ispPeer, routerPeer := prefixOf(ispAddr, 24), prefixOf(newAddr, 24), netip.Addr{}, netip.Addr{}
	if ppp {
		ispPrefix, routerPrefix, ispPeer, routerPeer = prefixOf(ispAddr, 32), prefixOf(newAddr, 32), newAddr, ispAddr
	}
	if err := addrUp(u.isp.h, peer, ispPrefix, ispPeer); err != nil {
		return res, fmt.Errorf("%s: %w", u.isp.name, err)
	}
	// Router end: up, then the address, like pppd's ip-up sequence seen by
	// uplinkd: the address event comes last.
	if err := l.router.h.LinkSetUp(v); err != nil {
		return res, fmt.Errorf("set %s up: %w", u.spec.Name, err)
	}
	if l.spec.IPv6 {
		if u.addr6, err = l.dial6(u, v, peer); err != nil {
			return res, err
		}
	}
	a := &netlink.Addr{IPNet: ipnet(routerPrefix)}
	if routerPeer.IsValid() {
		a.Peer = ipnet(prefixOf(routerPeer, 32))
	}
	if err := l.router.h.AddrAdd(v, a); err != nil {
		return res, fmt.Errorf("add %s to %s: %w", routerPrefix, u.spec.Name, err)
	}
	res.AddrAdded = time.Now()
	res.Old, res.New = u.last, newAddr
	u.dials++
	u.present, u.addr, u.last = true, newAddr, newAddr
	u.index, u.peerIndex = v.Attrs().Index, peer.Attrs().Index
	return res, nil
}

// SetCarrier takes the ISP end of the uplink down (up=false) or up again. The
// router side keeps IFF_UP but loses IFF_LOWER_UP (ip shows NO-CARRIER), the
// way a modem losing sync looks. The time is taken right after the change.
func (l *Lab) SetCarrier(name string, up bool) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return time.Time{}, err
	}
	if !u.present {
		return time.Time{}, fmt.Errorf("lab: carrier %s: link is dropped", name)
	}
	la := netlink.NewLinkAttrs()
	la.Index = u.peerIndex
	link := &netlink.Veth{LinkAttrs: la}
	if up {
		err = u.isp.h.LinkSetUp(link)
		if err == nil && l.spec.IPv6 {
			err = relinkLocal6(u, link)
		}
	} else {
		err = u.isp.h.LinkSetDown(link)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("lab: carrier %s up=%v: %w", name, up, err)
	}
	return time.Now(), nil
}

// LinkFlags returns the router-side link's raw IFF_* flags (IFF_UP,
// IFF_LOWER_UP, IFF_RUNNING, IFF_NOARP, ...), read via netlink.
func (l *Lab) LinkFlags(name string) (uint32, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	link, err := l.router.h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("lab: link %s: %w", name, err)
	}
	return link.Attrs().RawFlags, nil
}

// Carrier reports whether the router side of uplink name has carrier
// (IFF_LOWER_UP), which the kernel updates synchronously with the peer.
func (l *Lab) Carrier(name string) (bool, error) {
	f, err := l.LinkFlags(name)
	return f&unix.IFF_LOWER_UP != 0, err
}

// blackholeTable is the nftables table the lab installs in an ISP namespace.
// Matching on interface names (not indexes) keeps it effective across
// redials, which re-create cust0. inet-family hooks do not see ARP, so an
// ethernet uplink keeps resolving its gateway: only IP traffic vanishes, as
// when an upstream network fails behind a live modem.
const blackholeTable = "lab_blackhole"

var blackholeRuleset = `table inet ` + blackholeTable + ` {
	chain input { type filter hook input priority -300; policy accept; iifname "` + CustIface + `" drop; }
	chain forward { type filter hook forward priority -300; policy accept; iifname "` + CustIface + `" drop; oifname "` + CustIface + `" drop; }
	chain output { type filter hook output priority -300; policy accept; oifname "` + CustIface + `" drop; }
}
`

// iptables fallback for hosts without nft: the same three drops.
var blackholeIptables = [][]string{
	{"INPUT", "-i", CustIface},
	{"FORWARD", "-i", CustIface},
	{"FORWARD", "-o", CustIface},
	{"OUTPUT", "-o", CustIface},
}

// Blackhole makes the ISP of uplink name silently drop every IP packet from
// and to the customer link while carrier stays up, which is what health
// probes exist to detect. Blackhole(name, false) restores traffic.
func (l *Lab) Blackhole(name string, on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return err
	}
	if u.blackholed == on {
		return nil
	}
	// Not timestamped, so an exec of nft (tens of ms) is fine here.
	if _, lerr := exec.LookPath("nft"); lerr == nil {
		if on {
			_, err = execIn(u.isp.name, strings.NewReader(blackholeRuleset), "nft", "-f", "-")
		} else {
			_, err = execIn(u.isp.name, nil, "nft", "delete", "table", "inet", blackholeTable)
		}
	} else {
		op := "-I"
		if !on {
			op = "-D"
		}
		for _, r := range blackholeIptables {
			argv := append([]string{"iptables", "-w", op}, r...)
			argv = append(argv, "-j", "DROP")
			if _, err = execIn(u.isp.name, nil, argv...); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("lab: blackhole %s on=%v: %w", name, on, err)
	}
	u.blackholed = on
	return nil
}

// lossTable is the nftables table of RandomLoss in an ISP namespace.
const lossTable = "lab_loss"

// RandomLoss makes the named uplink's ISP drop percent % of the IP packets
// it sends towards the customer (the downstream of an access line, where a
// lossy line loses most), at random (nftables `numgen random`: the lab
// kernel has no sch_netem); percent 0 removes the loss. Upstream packets
// pass, so a probe or request is lost with exactly that probability.
func (l *Lab) RandomLoss(name string, percent int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	u, err := l.uplinkLocked(name)
	if err != nil {
		return err
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("lab: loss %d%% out of 0..100", percent)
	}
	// Declaring the table first makes the delete valid when it is absent.
	rs := "table inet " + lossTable + " {}\ndelete table inet " + lossTable + "\n"
	if percent > 0 {
		rs += fmt.Sprintf(`table inet %s {
	chain forward { type filter hook forward priority -290; policy accept; oifname "%s" numgen random mod 100 < %d drop; }
	chain output { type filter hook output priority -290; policy accept; oifname "%s" numgen random mod 100 < %d drop; }
}
`, lossTable, CustIface, percent, CustIface, percent)
	}
	if _, err := execIn(u.isp.name, strings.NewReader(rs), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("lab: random loss %s %d%%: %w", name, percent, err)
	}
	return nil
}
