package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/radv"
	"github.com/uplinkd/uplinkd/policy"
)

// TestLANAdvert: what the LAN is told in mode prefix and npt, as the
// uplinks' IPv6 verdicts change.
func TestLANAdvert(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := &policy.Config{
		LAN: policy.LAN{Interface: "lan0", IPv6: policy.LAN6{Mode: policy.LAN6Prefix, Announce: true, Subnet: 1,
			MaxInterval: 600 * time.Second, RouterLifetime: 1800 * time.Second, RouterPreference: policy.PreferenceMedium}},
		Uplinks: []policy.Uplink{
			{Name: "a", Interface: "eth1", IPv6: true},
			{Name: "b", Interface: "eth2", IPv6: true, DelegatedPrefix: netip.MustParsePrefix("2001:db8:b::/56")},
			{Name: "c", Interface: "eth3"},
		},
	}
	deleg := map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix("2001:db8:a::/56"), netip.MustParsePrefix("2001:db8:f::/56")}}
	lts := map[string]delegLifetimes{"a": {preferredUntil: now.Add(time.Hour), validUntil: now.Add(3 * time.Hour)}}
	states := func(a, b bool) []policy.UplinkState {
		return []policy.UplinkState{{IPv6: policy.UplinkState6{Usable: a}}, {IPv6: policy.UplinkState6{Usable: b}}, {}}
	}
	pa, pf, pb := netip.MustParsePrefix("2001:db8:a:1::/64"), netip.MustParsePrefix("2001:db8:f:1::/64"), netip.MustParsePrefix("2001:db8:b:1::/64")

	got := lanAdvert(cfg, states(true, true), deleg, lts, now)
	want := []radv.Prefix{
		{Prefix: pa, Uplink: "a", Preferred: time.Hour, Valid: 3 * time.Hour},
		{Prefix: pf, Uplink: "a", Preferred: 0, Valid: HostValidFloor}, // a former delegation
		{Prefix: pb, Uplink: "b", Preferred: raPreferredCap, Valid: raValidCap},
	}
	check := func(name string, got radv.Advert, rl time.Duration, want []radv.Prefix) {
		t.Helper()
		if got.RouterLifetime != rl || len(got.Prefixes) != len(want) {
			t.Fatalf("%s: router lifetime %v, prefixes %+v", name, got.RouterLifetime, got.Prefixes)
		}
		for i := range want {
			if got.Prefixes[i] != want[i] {
				t.Errorf("%s: prefix %d %+v, want %+v", name, i, got.Prefixes[i], want[i])
			}
		}
	}
	check("both up", got, 1800*time.Second, want)

	// a's IPv6 fails: its prefix is deprecated, valid cut to 2 h (RFC 4862
	// 5.5.3 e: hosts honour that floor).
	want[0] = radv.Prefix{Prefix: pa, Uplink: "a", Preferred: 0, Valid: HostValidFloor}
	check("a down", lanAdvert(cfg, states(false, true), deleg, lts, now), 1800*time.Second, want)

	// b drained: deprecated as well; nothing preferred: router lifetime 0.
	st := states(false, true)
	st[1].Drained = true
	want[2] = radv.Prefix{Prefix: pb, Uplink: "b", Preferred: 0, Valid: HostValidFloor}
	check("none usable", lanAdvert(cfg, st, deleg, lts, now), 0, want)

	// The delegation's preferred lifetime ran out: deprecated though a
	// is up.
	later := now.Add(2 * time.Hour)
	got = lanAdvert(cfg, states(true, true), deleg, lts, later)
	if p := got.Prefixes[0]; p.Preferred != 0 || p.Valid != time.Hour {
		t.Errorf("expired preferred lifetime: %+v", p)
	}

	// npt: the inside prefix, preferred whatever the uplinks do; router
	// lifetime 0 only when no uplink has IPv6.
	cfg.LAN.IPv6.Mode, cfg.LAN.IPv6.Prefix = policy.LAN6NPT, netip.MustParsePrefix("fd42::/64")
	in := []radv.Prefix{{Prefix: cfg.LAN.IPv6.Prefix, Preferred: raPreferredCap, Valid: raValidCap}}
	check("npt, a up", lanAdvert(cfg, states(true, false), deleg, lts, now), 1800*time.Second, in)
	check("npt, none up", lanAdvert(cfg, states(false, false), deleg, lts, now), 0, in)
}
