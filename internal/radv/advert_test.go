package radv

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
)

// TestMessageRoundTrip: the advertisement's wire form parses back (ndp's
// own parser) with every option as announced.
func TestMessageRoundTrip(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	a := Advert{
		RouterLifetime: 30 * time.Minute, Preference: ndp.High,
		Prefixes: []Prefix{
			{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Uplink: "a", Preferred: time.Hour, Valid: 2 * time.Hour},
			{Prefix: netip.MustParsePrefix("2001:db8:b::/64"), Uplink: "b", Preferred: 0, Valid: 2 * time.Hour},
		},
		RDNSS: []netip.Addr{netip.MustParseAddr("2001:db8::53")}, DNSSL: []string{"lan.example"}, DNSLifetime: 20 * time.Minute,
	}
	b, err := ndp.MarshalMessage(a.Message(mac))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	ra, ok := m.(*ndp.RouterAdvertisement)
	if !ok {
		t.Fatalf("parsed %T", m)
	}
	if ra.RouterLifetime != 30*time.Minute || ra.RouterSelectionPreference != ndp.High || ra.CurrentHopLimit != 64 {
		t.Errorf("header: lifetime %v preference %v hop limit %d", ra.RouterLifetime, ra.RouterSelectionPreference, ra.CurrentHopLimit)
	}
	var pios []*ndp.PrefixInformation
	var rdnss, dnssl, lla int
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			pios = append(pios, o)
		case *ndp.RecursiveDNSServer:
			rdnss++
			if len(o.Servers) != 1 || o.Servers[0] != a.RDNSS[0] || o.Lifetime != 20*time.Minute {
				t.Errorf("RDNSS %+v", o)
			}
		case *ndp.DNSSearchList:
			dnssl++
			if len(o.DomainNames) != 1 || o.DomainNames[0] != "lan.example" {
				t.Errorf("DNSSL %+v", o)
			}
		case *ndp.LinkLayerAddress:
			lla++
			if o.Direction != ndp.Source || o.Addr.String() != mac.String() {
				t.Errorf("LLA %+v", o)
			}
		}
	}
	if rdnss != 1 || dnssl != 1 || lla != 1 || len(pios) != 2 {
		t.Fatalf("options: %d RDNSS, %d DNSSL, %d LLA, %d PIO", rdnss, dnssl, lla, len(pios))
	}
	for i, p := range pios {
		w := a.Prefixes[i]
		if p.Prefix != w.Prefix.Addr() || p.PrefixLength != 64 || !p.OnLink || !p.AutonomousAddressConfiguration ||
			p.PreferredLifetime != w.Preferred || p.ValidLifetime != w.Valid {
			t.Errorf("PIO %d: %+v, want %+v", i, p, w)
		}
	}
}

// TestFinal: the final advertisement has router lifetime 0 and preference
// medium (RFC 4191 2.2), and keeps the prefixes.
func TestFinal(t *testing.T) {
	a := Advert{RouterLifetime: time.Hour, Preference: ndp.Low, Prefixes: []Prefix{{Prefix: netip.MustParsePrefix("fd42::/64"), Preferred: time.Hour, Valid: time.Hour}}}
	ra := a.Final().Message(nil)
	if ra.RouterLifetime != 0 || ra.RouterSelectionPreference != ndp.Medium || len(ra.Options) != 1 {
		t.Errorf("final: %+v", ra)
	}
	if a.Equal(a.Final()) || !a.Equal(a) || a.SameShape(a.Final()) {
		t.Error("Equal")
	}
	// Lifetimes counting down keep the shape; a deprecation does not.
	b := a
	b.Prefixes = []Prefix{{Prefix: a.Prefixes[0].Prefix, Preferred: time.Minute, Valid: time.Minute}}
	if !a.SameShape(b) || a.Equal(b) {
		t.Error("counted-down lifetimes change the shape")
	}
	b.Prefixes[0].Preferred = 0
	if a.SameShape(b) {
		t.Error("a deprecation keeps the shape")
	}
}
