// Package radv sends the LAN's IPv6 router advertisements ([lan.ipv6]
// announce, docs/ipv6.md): one /64 per usable uplink in mode prefix (SLAAC),
// the inside prefix in mode npt, RDNSS and DNSSL. uplinkd sends them itself,
// as it serves DHCPv4 itself (internal/dhcpd), because it knows the moment
// an uplink fails: the deprecating advertisement leaves in the aftermath of
// the same reconcile pass, with no radvd config to rewrite and no restart.
//
// Files:
//
//	advert.go  Advert (what is announced) and its wire message (pure)
//	sender.go  the raw ICMPv6 socket: periodic and solicited
//	           advertisements (RFC 4861 6.2), bursts on a change, a final
//	           router lifetime 0 when it stops
//
// The wire format is github.com/mdlayher/ndp's.
package radv

import (
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
)

// Prefix is one prefix information option (RFC 4861 4.6.2) with the
// on-link and autonomous flags set, so hosts form SLAAC addresses in it.
type Prefix struct {
	Prefix netip.Prefix
	// Uplink is the uplink whose delegation the prefix comes from ("" in
	// mode npt); for the status and the logs only.
	Uplink string
	// Preferred and Valid are the lifetimes announced. A deprecated prefix
	// has Preferred 0: hosts stop choosing its addresses for new
	// connections at once (RFC 4862 5.5.3 d/e sets the preferred lifetime
	// to what is received) and keep them for what Valid allows.
	Preferred, Valid time.Duration
}

// Deprecated reports whether hosts are told not to use the prefix for new
// connections.
func (p Prefix) Deprecated() bool { return p.Preferred == 0 }

// Advert is what the router advertisements say. The zero Advert announces
// nothing and a router lifetime of 0.
type Advert struct {
	// RouterLifetime is how long hosts keep this router as a default
	// router; 0 when no uplink has usable IPv6 (hosts then keep their
	// addresses but stop routing to the gateway).
	RouterLifetime time.Duration
	// Preference is the default router preference (RFC 4191 2.2).
	Preference ndp.Preference
	Prefixes   []Prefix
	// RDNSS and DNSSL (RFC 8106) with their lifetime; left out when empty.
	RDNSS       []netip.Addr
	DNSSL       []string
	DNSLifetime time.Duration
}

// Equal reports whether a and b say the same.
func (a Advert) Equal(b Advert) bool {
	return a.RouterLifetime == b.RouterLifetime && a.Preference == b.Preference &&
		slices.Equal(a.Prefixes, b.Prefixes) && slices.Equal(a.RDNSS, b.RDNSS) &&
		slices.Equal(a.DNSSL, b.DNSSL) && a.DNSLifetime == b.DNSLifetime
}

// SameShape reports whether a and b differ at most in lifetimes that
// merely count down (a learned delegation's remaining lifetimes change
// every second): the same prefixes, each preferred or deprecated alike,
// the same router lifetime and options. Only a change of shape is sent at
// once; the counted-down lifetimes leave with the next periodic one.
func (a Advert) SameShape(b Advert) bool {
	if a.RouterLifetime != b.RouterLifetime || a.Preference != b.Preference || len(a.Prefixes) != len(b.Prefixes) ||
		!slices.Equal(a.RDNSS, b.RDNSS) || !slices.Equal(a.DNSSL, b.DNSSL) || a.DNSLifetime != b.DNSLifetime {
		return false
	}
	for i, p := range a.Prefixes {
		q := b.Prefixes[i]
		if p.Prefix != q.Prefix || p.Uplink != q.Uplink || p.Deprecated() != q.Deprecated() {
			return false
		}
	}
	return true
}

// Message is the router advertisement of a, sent from link-local address
// src's interface with link-layer address mac (the source link-layer
// address option lets hosts skip a neighbour solicitation; nil leaves it
// out).
func (a Advert) Message(mac []byte) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		// 64 is the usual default hop limit (radvd's, the kernel's);
		// 0 would leave the hosts' own choice.
		CurrentHopLimit:           64,
		RouterSelectionPreference: a.Preference,
		RouterLifetime:            a.RouterLifetime,
	}
	if a.RouterLifetime == 0 {
		// RFC 4191 2.2: a router lifetime 0 must come with preference
		// medium (00).
		ra.RouterSelectionPreference = ndp.Medium
	}
	if len(mac) > 0 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	for _, p := range a.Prefixes {
		ra.Options = append(ra.Options, &ndp.PrefixInformation{
			PrefixLength: uint8(p.Prefix.Bits()), OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: p.Valid, PreferredLifetime: p.Preferred, Prefix: p.Prefix.Masked().Addr(),
		})
	}
	if len(a.RDNSS) > 0 {
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: a.DNSLifetime, Servers: a.RDNSS})
	}
	if len(a.DNSSL) > 0 {
		ra.Options = append(ra.Options, &ndp.DNSSearchList{Lifetime: a.DNSLifetime, DomainNames: a.DNSSL})
	}
	return ra
}

// Final is a's last advertisement before the sender stops (RFC 4861
// 6.2.5): router lifetime 0, so hosts stop using the gateway as a router
// at once; the prefixes are repeated as they are (the addresses stay
// valid, another router may route them).
func (a Advert) Final() Advert {
	a.RouterLifetime = 0
	return a
}
