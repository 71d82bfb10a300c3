package kernel

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/rtattr"
)

// The mirror decodes rtnetlink messages itself, dumps and notifications
// alike, so both go through one parser and one set of update rules. The
// attribute walk is rtattr.Walk, shared with the watcher (see rtattr's
// package doc for why not jsimonetti/rtnetlink's types).

// mlink is one link as the mirror keeps it.
type mlink struct {
	index int32
	name  string
	flags uint32 // ifi_flags: IFF_UP, IFF_LOWER_UP, IFF_POINTOPOINT...
	mtu   uint32
	oper  uint8 // IFLA_OPERSTATE
	kind  string
	// rpFilter is the link's net.ipv4.conf.<name>.rp_filter (IFLA_INET_CONF
	// of its RTM_NEWLINK, or RTM_NEWNETCONF when someone writes the sysctl);
	// -1 when the kernel did not say.
	rpFilter int32
	// The kernel's own counters of carrier transitions (IFLA_CARRIER_CHANGES
	// and IFLA_CARRIER_DOWN_COUNT). They only grow, so a notification that
	// carries smaller ones than the mirror holds is older than what the
	// mirror holds (a message queued before a dump): see mirror.olderThanMirror.
	carrierChanges uint32
	carrierDowns   uint32
	hasCarrierDown bool
}

// IPv4 devconf and netconf numbers (linux/ip.h, linux/netconf.h).
const (
	devconfRPFilter  = 8 // IPV4_DEVCONF_RP_FILTER
	netconfaIfindex  = 1 // NETCONFA_IFINDEX
	netconfaRPFilter = 3 // NETCONFA_RP_FILTER
)

func (l *mlink) upAndCarrier() bool {
	return l.flags&unix.IFF_UP != 0 && l.flags&unix.IFF_LOWER_UP != 0
}

// decodeLink parses an ifinfomsg. ok is false for messages of other
// families (bridge port notifications share the link group and carry
// partial information about links that are not going anywhere).
func decodeLink(b []byte) (l mlink, ok bool, err error) {
	if len(b) < unix.SizeofIfInfomsg {
		return l, false, rtattr.ErrShort
	}
	if b[0] != unix.AF_UNSPEC {
		return l, false, nil
	}
	l.index = int32(binary.NativeEndian.Uint32(b[4:]))
	l.flags = binary.NativeEndian.Uint32(b[8:])
	l.rpFilter = -1
	err = rtattr.Walk(b[unix.SizeofIfInfomsg:], func(ad *rtattr.Decoder) {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			l.name = ad.String()
		case unix.IFLA_MTU:
			l.mtu = ad.Uint32()
		case unix.IFLA_OPERSTATE:
			l.oper = ad.Uint8()
		case unix.IFLA_CARRIER_CHANGES:
			l.carrierChanges = ad.Uint32()
		case unix.IFLA_CARRIER_DOWN_COUNT:
			l.carrierDowns, l.hasCarrierDown = ad.Uint32(), true
		case unix.IFLA_AF_SPEC:
			ad.Nested(func(af *rtattr.Decoder) error {
				for af.Next() {
					if af.Type() != unix.AF_INET {
						continue
					}
					af.Nested(func(in *rtattr.Decoder) error {
						for in.Next() {
							// IFLA_INET_CONF: the devconf values as a u32 array,
							// entry i holding devconf number i+1.
							if c := in.Bytes(); in.Type() == unix.IFLA_INET_CONF && len(c) >= 4*devconfRPFilter {
								l.rpFilter = int32(binary.NativeEndian.Uint32(c[4*(devconfRPFilter-1):]))
							}
						}
						return nil
					})
				}
				return nil
			})
		case unix.IFLA_LINKINFO:
			ad.Nested(func(nad *rtattr.Decoder) error {
				for nad.Next() {
					if nad.Type() == unix.IFLA_INFO_KIND {
						l.kind = nad.String()
					}
				}
				return nil
			})
		}
	})
	return l, err == nil, err
}

// decodeNetconf parses an IPv4 RTM_NEWNETCONF: the ifindex it is about
// (negative: "all" or "default") and the rp_filter value if it has one.
func decodeNetconf(b []byte) (index int32, rp int32, ok bool, err error) {
	if len(b) < 4 || b[0] != unix.AF_INET { // struct netconfmsg, padded
		return 0, -1, false, nil
	}
	rp = -1
	err = rtattr.Walk(b[4:], func(ad *rtattr.Decoder) {
		switch ad.Type() {
		case netconfaIfindex:
			index = int32(ad.Uint32())
		case netconfaRPFilter:
			rp = int32(ad.Uint32())
		}
	})
	return index, rp, err == nil && index > 0 && rp >= 0, err
}

// maddr is one IPv4 or IPv6 address.
type maddr struct {
	index int32
	local netip.Addr // IFA_LOCAL (IFA_ADDRESS when there is none)
	bits  uint8
	peer  netip.Addr // IFA_ADDRESS when it differs from IFA_LOCAL
	flags uint32
	scope uint8
}

func (a maddr) same(o maddr) bool {
	return a.index == o.index && a.local == o.local && a.bits == o.bits && a.peer == o.peer
}

func (a maddr) secondary() bool { return a.flags&unix.IFA_F_SECONDARY != 0 }

func decodeAddr(b []byte) (a maddr, ok bool, err error) {
	if len(b) < unix.SizeofIfAddrmsg {
		return a, false, rtattr.ErrShort
	}
	if b[0] != unix.AF_INET && b[0] != unix.AF_INET6 {
		return a, false, nil
	}
	a.bits, a.flags, a.scope = b[1], uint32(b[2]), b[3]
	a.index = int32(binary.NativeEndian.Uint32(b[4:]))
	var address netip.Addr
	preferred := uint32(math.MaxUint32) // no IFA_CACHEINFO: not deprecated by it
	err = rtattr.Walk(b[unix.SizeofIfAddrmsg:], func(ad *rtattr.Decoder) {
		switch ad.Type() {
		case unix.IFA_LOCAL:
			a.local = addrOf(ad.Bytes())
		case unix.IFA_ADDRESS:
			address = addrOf(ad.Bytes())
		case unix.IFA_FLAGS:
			a.flags = ad.Uint32()
		case unix.IFA_CACHEINFO:
			if c := ad.Bytes(); b[0] == unix.AF_INET6 && len(c) >= unix.SizeofIfaCacheinfo {
				preferred = binary.NativeEndian.Uint32(c)
			}
		}
	})
	// A preferred lifetime of 0 is a deprecated address (RFC 4862 5.5.4)
	// although the kernel sets IFA_F_DEPRECATED only in its next
	// lifetime pass: a router advertisement that deprecates a prefix is
	// first notified without the flag, and reading the flag alone would
	// make the address usable for a moment (a rule added, then deleted).
	if preferred == 0 {
		a.flags |= unix.IFA_F_DEPRECATED
	}
	if !a.local.IsValid() {
		a.local = address
	} else if address.IsValid() && address != a.local {
		a.peer = address
	}
	return a, err == nil && a.local.IsValid(), err
}

// rkey is the kernel's identity of a route slot: table, prefix (with its
// family), tos and priority. Several routes (aliases) may share one slot.
type rkey struct {
	table  uint32
	dst    netip.Prefix
	tos    uint8
	metric uint32
}

type mnexthop struct {
	gw   netip.Addr
	oif  int32
	hops uint8 // weight - 1
}

// mroute is one IPv4 or IPv6 route (the family is key.dst's).
type mroute struct {
	key     rkey
	typ     uint8
	proto   uint8
	scope   uint8
	prefsrc netip.Addr
	nhs     []mnexthop
}

func (r *mroute) equal(o *mroute) bool {
	return r.key == o.key && r.typ == o.typ && r.proto == o.proto && r.scope == o.scope &&
		r.prefsrc == o.prefsrc && slices.Equal(r.nhs, o.nhs)
}

func (r *mroute) via(oif int32) bool {
	return slices.ContainsFunc(r.nhs, func(nh mnexthop) bool { return nh.oif == oif })
}

// routeHeader is the part of an rtmsg the filter needs: enough to drop a
// foreign route without decoding its attributes (except RTA_TABLE, which
// holds table numbers above 255).
type routeHeader struct {
	family, dstLen, tos, table, proto, scope, typ uint8
	flags                                         uint32
}

func decodeRouteHeader(b []byte) (h routeHeader, err error) {
	if len(b) < unix.SizeofRtMsg {
		return h, rtattr.ErrShort
	}
	return routeHeader{family: b[0], dstLen: b[1], tos: b[3], table: b[4], proto: b[5], scope: b[6], typ: b[7],
		flags: binary.NativeEndian.Uint32(b[8:])}, nil
}

// routeTable returns the route's table: RTA_TABLE if present (tables above
// 255 have rtm_table RT_TABLE_COMPAT), else the header's. It scans only
// attribute headers.
func routeTable(b []byte, h routeHeader) uint32 {
	attrs := b[unix.SizeofRtMsg:]
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs))
		t := binary.NativeEndian.Uint16(attrs[2:]) &^ (1<<15 | 1<<14) // NLA_F_NESTED, NLA_F_NET_BYTEORDER
		if l < 4 || l > len(attrs) {
			break
		}
		if t == unix.RTA_TABLE && l >= 8 {
			return binary.NativeEndian.Uint32(attrs[4:])
		}
		attrs = attrs[(l+3)&^3:]
	}
	return uint32(h.table)
}

func decodeRoute(b []byte, h routeHeader, table uint32) (r mroute, err error) {
	r.key = rkey{table: table, tos: h.tos}
	r.typ, r.proto, r.scope = h.typ, h.proto, h.scope
	var dst netip.Addr
	var single mnexthop
	err = rtattr.Walk(b[unix.SizeofRtMsg:], func(ad *rtattr.Decoder) {
		switch ad.Type() {
		case unix.RTA_DST:
			dst = addrOf(ad.Bytes())
		case unix.RTA_PRIORITY:
			r.key.metric = ad.Uint32()
		case unix.RTA_PREFSRC:
			r.prefsrc = addrOf(ad.Bytes())
		case unix.RTA_OIF:
			single.oif = int32(ad.Uint32())
		case unix.RTA_GATEWAY:
			single.gw = addrOf(ad.Bytes())
		case unix.RTA_MULTIPATH:
			r.nhs = decodeMultipath(ad.Bytes())
		}
	})
	if !dst.IsValid() {
		dst = netip.IPv4Unspecified()
		if h.family == unix.AF_INET6 {
			dst = netip.IPv6Unspecified()
		}
	}
	r.key.dst = netip.PrefixFrom(dst, int(h.dstLen))
	if r.nhs == nil {
		r.nhs = []mnexthop{single}
	}
	return r, err
}

// decodeMultipath parses a list of struct rtnexthop, each followed by its
// own attributes (RTA_GATEWAY).
func decodeMultipath(b []byte) []mnexthop {
	var out []mnexthop
	for len(b) >= unix.SizeofRtNexthop {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtNexthop || l > len(b) {
			break
		}
		nh := mnexthop{hops: b[3], oif: int32(binary.NativeEndian.Uint32(b[4:]))}
		_ = rtattr.Walk(b[unix.SizeofRtNexthop:l], func(ad *rtattr.Decoder) {
			if ad.Type() == unix.RTA_GATEWAY {
				nh.gw = addrOf(ad.Bytes())
			}
		})
		out = append(out, nh)
		b = b[(l+3)&^3:]
	}
	return out
}

// mrule is one IPv4 or IPv6 policy rule: its policy form plus the fields
// that make two rules different in the kernel.
type mrule struct {
	v6          bool
	prio, table uint32
	src         netip.Prefix
	mark, mask  uint32 // mask: FRA_FWMASK (0xffffffff for a mark without one)
	proto       uint8
	suppress    bool   // suppress_prefixlength 0 (policy.Rule.SuppressDefault)
	extra       string // policy.Rule.Extra
	key         string // id(), computed once
	// pending: written by uplinkd (or read by a dump) and its notification
	// may still be queued; a NEWRULE identical to it is that notification,
	// not a duplicate rule.
	pending bool
}

// id is what tells rules apart for the mirror: the policy form's fields.
func (r *mrule) id() string {
	if r.key == "" {
		r.key = fmt.Sprintf("%d/%d/%s/%x/%x/%d/%t/%s/%t", r.prio, r.table, r.src, r.mark, r.mask, r.proto, r.suppress, r.extra, r.v6)
	}
	return r.key
}

func decodeRule(b []byte) (r mrule, ok bool, err error) {
	if len(b) < rtattr.SizeofFibRuleHdr {
		return r, false, rtattr.ErrShort
	}
	if b[0] != unix.AF_INET && b[0] != unix.AF_INET6 {
		return r, false, nil
	}
	r.v6 = b[0] == unix.AF_INET6
	dstLen, srcLen, tos, action := b[1], b[2], b[3], b[7]
	flags := binary.NativeEndian.Uint32(b[8:])
	r.table = uint32(b[4])
	var (
		dst, src         netip.Addr
		iif, oif         string
		uid              []byte
		l4, goTo         bool
		suppPL, suppIfgr = false, false
	)
	err = rtattr.Walk(b[12:], func(ad *rtattr.Decoder) {
		switch ad.Type() {
		case unix.FRA_DST:
			dst = addrOf(ad.Bytes())
		case unix.FRA_SRC:
			src = addrOf(ad.Bytes())
		case unix.FRA_IIFNAME:
			iif = ad.String()
		case unix.FRA_OIFNAME:
			oif = ad.String()
		case unix.FRA_PRIORITY:
			r.prio = ad.Uint32()
		case unix.FRA_FWMARK:
			r.mark = ad.Uint32()
		case unix.FRA_FWMASK:
			r.mask = ad.Uint32()
		case unix.FRA_TABLE:
			r.table = ad.Uint32()
		case unix.FRA_PROTOCOL:
			r.proto = ad.Uint8()
		case unix.FRA_UID_RANGE:
			uid = ad.Bytes()
		case unix.FRA_IP_PROTO, unix.FRA_SPORT_RANGE, unix.FRA_DPORT_RANGE:
			l4 = true
		case unix.FRA_GOTO:
			goTo = true
		case unix.FRA_SUPPRESS_PREFIXLEN:
			// 0 is uplinkd's own `lookup main suppress_prefixlength 0`;
			// any other length is a selector uplinkd never writes.
			n := int32(ad.Uint32())
			r.suppress, suppPL = n == 0, n > 0
		case unix.FRA_SUPPRESS_IFGROUP:
			suppIfgr = int32(ad.Uint32()) >= 0
		}
	})
	if src.IsValid() {
		r.src = netip.PrefixFrom(src, int(srcLen))
	}
	// The same selectors, in the same words, as the dump-based reading had:
	// a foreign rule with any of them never matches one of ours.
	var extra []string
	if dst.IsValid() {
		extra = append(extra, "to "+netip.PrefixFrom(dst, int(dstLen)).String())
	}
	if iif != "" {
		extra = append(extra, "iif "+iif)
	}
	if oif != "" {
		extra = append(extra, "oif "+oif)
	}
	if len(uid) >= 8 {
		extra = append(extra, fmt.Sprintf("uidrange %d-%d", binary.NativeEndian.Uint32(uid), binary.NativeEndian.Uint32(uid[4:])))
	}
	if l4 {
		extra = append(extra, "l4")
	}
	if tos != 0 || flags&unix.FIB_RULE_INVERT != 0 || goTo || suppPL || suppIfgr ||
		(action != 0 && action != unix.FR_ACT_TO_TBL) {
		extra = append(extra, "other")
	}
	for i, e := range extra {
		if i > 0 {
			r.extra += ","
		}
		r.extra += e
	}
	return r, err == nil, err
}

// addrOf is an IPv4 (4 bytes) or IPv6 (16 bytes) address attribute.
func addrOf(b []byte) netip.Addr {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b))
	case 16:
		return netip.AddrFrom16([16]byte(b))
	}
	return netip.Addr{}
}
