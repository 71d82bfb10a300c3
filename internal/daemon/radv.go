package daemon

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/ha"
	"github.com/uplinkd/uplinkd/internal/metrics"
	"github.com/uplinkd/uplinkd/internal/radv"
	"github.com/uplinkd/uplinkd/policy"
)

// The LAN's router advertisements ([lan.ipv6] announce, internal/radv):
// after every pass the loop computes what to announce from the pass's
// verdicts and the delegations, and hands it to the sender, which sends a
// change at once (as a burst). An uplink whose IPv6 fails, is drained, or
// whose delegation ends has its /64 announced with preferred lifetime 0 in
// the aftermath of the pass that saw it (docs/ipv6.md).

// Lifetimes of the announced prefixes: a delegation's own, capped at
// radvd's defaults (AdvPreferredLifetime 4 h, AdvValidLifetime 1 day); a
// configured delegated_prefix (no lifetimes) and the npt inside prefix get
// the caps. HostValidFloor is what RFC 4862 5.5.3(e) lets a router cut a
// host's valid lifetime to: a deprecated prefix is announced with at most
// that (a host keeps more only if it holds less already).
const (
	raPreferredCap = 4 * time.Hour
	raValidCap     = 24 * time.Hour
	HostValidFloor = 2 * time.Hour
	// raGoneKeep is how long a prefix that is no longer delegated stays
	// in the advertisements with lifetimes 0 (RFC 9096 3.5: announce
	// stale prefixes as such), so that hosts that missed the burst learn
	// it from a periodic one; hosts drop it by HostValidFloor anyway.
	raGoneKeep = HostValidFloor
)

// radvRuntime is the running sender and what the loop last told it.
type radvRuntime struct {
	s      *radv.Sender
	spec   radv.Spec
	cancel context.CancelFunc
	done   chan struct{}
	// gone: prefixes announced before that no longer are, with when they
	// went (announced deprecated until raGoneKeep has passed).
	gone map[netip.Prefix]goneInfo
	// last is the advert of the last pass (re-sent on an HA role change).
	last radv.Advert
	// announced are the prefixes of last, by prefix.
	announced map[netip.Prefix]radv.Prefix
}

type goneInfo struct {
	uplink string
	at     time.Time
}

func radvSpec(cfg *policy.Config, netnsFD int) (radv.Spec, bool) {
	v := cfg.LAN.IPv6
	if !v.Announce || v.Mode == policy.LAN6Off || v.Mode == "" {
		return radv.Spec{}, false
	}
	return radv.Spec{Interface: cfg.LAN.Interface, MinInterval: v.MinInterval, MaxInterval: v.MaxInterval, NetNS: netnsFD}, true
}

// startRadv starts the sender of cfg on a goroutine Run owns; it announces
// from the next pass on.
func (d *Daemon) startRadv(ctx context.Context, cfg *policy.Config) {
	spec, ok := radvSpec(cfg, d.netnsFD())
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &radvRuntime{s: radv.New(spec, d.log), spec: spec, cancel: cancel, done: make(chan struct{}), gone: map[netip.Prefix]goneInfo{}}
	d.wg.Go(func() {
		defer close(r.done)
		_ = r.s.Run(ctx)
	})
	d.x.radv.Store(r)
	d.log.Info("router advertisements on", "event", "radv", "iface", spec.Interface, "mode", string(cfg.LAN.IPv6.Mode))
}

// stopRadv ends the sender (which sends its final advertisement, router
// lifetime 0) and waits for it.
func (d *Daemon) stopRadv() {
	r := d.x.radv.Swap(nil)
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
}

// reloadRadv recreates the sender when a reload changed its interface or
// intervals; the advertisement itself follows at the next pass.
func (d *Daemon) reloadRadv(ctx context.Context, cfg *policy.Config) {
	spec, ok := radvSpec(cfg, d.netnsFD())
	r := d.x.radv.Load()
	if r != nil && ok && reflect.DeepEqual(r.spec, spec) {
		return
	}
	if r == nil && !ok {
		return
	}
	d.stopRadv()
	d.startRadv(ctx, cfg)
}

// raActive: with [ha], only the master announces.
func (d *Daemon) raActive() bool {
	return !d.cfg.HA.Enabled() || d.ha.state.Role == ha.RoleMaster
}

// passRadv hands the sender what this pass's verdicts announce.
func (d *Daemon) passRadv(states []policy.UplinkState, now time.Time) {
	r := d.x.radv.Load()
	if r == nil || len(states) != len(d.cfg.Uplinks) {
		return // no sender, or a pass that computed nothing (snapshot failed)
	}
	a := lanAdvert(d.cfg, states, d.deleg.set.Prefixes(), d.deleg.lifetimes(d.cfg), now)
	// Prefixes that left the advertisement stay in it deprecated, with
	// valid lifetime 0 (hosts cut theirs to 2 h, or keep less).
	cur := map[netip.Prefix]radv.Prefix{}
	for _, p := range a.Prefixes {
		cur[p.Prefix] = p
		delete(r.gone, p.Prefix)
	}
	for p, old := range r.announced {
		if _, ok := cur[p]; !ok {
			if _, ok := r.gone[p]; !ok {
				r.gone[p] = goneInfo{uplink: old.Uplink, at: now}
				d.log.Info("LAN prefix withdrawn", "event", "radv", "prefix", p.String(), "uplink", old.Uplink)
			}
		}
	}
	for p, g := range r.gone {
		if now.Sub(g.at) >= raGoneKeep {
			delete(r.gone, p)
			continue
		}
		a.Prefixes = append(a.Prefixes, radv.Prefix{Prefix: p, Uplink: g.uplink})
	}
	slices.SortStableFunc(a.Prefixes, func(x, y radv.Prefix) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	for _, p := range a.Prefixes {
		if old, ok := r.announced[p.Prefix]; ok && old.Deprecated() != p.Deprecated() {
			state := "preferred"
			if p.Deprecated() {
				state = "deprecated"
			}
			d.log.Info("LAN prefix "+state, "event", "radv", "prefix", p.Prefix.String(), "uplink", p.Uplink,
				"preferred_lifetime", p.Preferred, "valid_lifetime", p.Valid)
		}
	}
	r.announced = map[netip.Prefix]radv.Prefix{}
	for _, p := range a.Prefixes {
		if _, gone := r.gone[p.Prefix]; !gone {
			r.announced[p.Prefix] = p
		}
	}
	r.last = a
	r.s.Set(a, d.raActive())
}

// radvRole re-tells the sender whether it announces, after an HA role
// change (a backup sends one router lifetime 0, then nothing).
func (d *Daemon) radvRole() {
	if r := d.x.radv.Load(); r != nil {
		r.s.Set(r.last, d.raActive())
	}
}

// delegLifetimes is an uplink's current delegation's lifetime ends (zero:
// infinite, or a configured prefix).
type delegLifetimes struct{ preferredUntil, validUntil time.Time }

// lifetimes are the lifetime ends of each uplink's current learned
// delegation, by uplink name.
func (dl *delegated) lifetimes(cfg *policy.Config) map[string]delegLifetimes {
	out := map[string]delegLifetimes{}
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if ds := dl.set[u.Interface]; len(ds) > 0 && !u.DelegatedPrefix.IsValid() {
			out[u.Name] = delegLifetimes{ds[0].PreferredUntil, ds[0].ValidUntil}
		}
	}
	return out
}

// lanAdvert is what the LAN is told (pure). Mode prefix: the [lan.ipv6]
// subnet of each uplink's current delegation (and of its former ones,
// deprecated), preferred while the uplink's IPv6 is usable and it is not
// drained; mode npt: the inside prefix, always preferred. The router
// lifetime is 0 when no uplink can carry the LAN's IPv6. delegated is
// Observed.Delegated.
func lanAdvert(cfg *policy.Config, states []policy.UplinkState, delegated map[string][]netip.Prefix, lts map[string]delegLifetimes, now time.Time) radv.Advert {
	v := cfg.LAN.IPv6
	a := radv.Advert{RDNSS: v.RDNSS, DNSSL: v.DNSSL, DNSLifetime: 3 * v.MaxInterval, Preference: ndpPreference(v.RouterPreference)}
	obs := policy.Observed{Delegated: delegated}
	routed := false
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		if !u.IPv6 || i >= len(states) {
			continue
		}
		usable := states[i].IPv6.Usable && !states[i].Drained
		if v.Mode == policy.LAN6NPT {
			routed = routed || usable
			continue
		}
		ps, _ := policy.Delegated(u, obs)
		for k, p := range ps {
			lan, ok := policy.LANSubnet6(p, v.Subnet)
			if !ok {
				continue // logged by npt6Maps' sibling check at learn time
			}
			preferred, valid := raPreferredCap, raValidCap
			if lt, ok := lts[u.Name]; ok && k == 0 {
				preferred, valid = remaining(lt.preferredUntil, now, raPreferredCap), remaining(lt.validUntil, now, raValidCap)
			}
			preferred = min(preferred, valid)
			if !usable || k > 0 || preferred <= 0 {
				// Deprecated: hosts stop using it for new connections
				// now and keep it at most HostValidFloor.
				preferred, valid = 0, min(valid, HostValidFloor)
			}
			if preferred > 0 {
				routed = true
			}
			a.Prefixes = append(a.Prefixes, radv.Prefix{Prefix: lan, Uplink: u.Name, Preferred: preferred, Valid: valid})
		}
	}
	if v.Mode == policy.LAN6NPT {
		a.Prefixes = []radv.Prefix{{Prefix: v.Prefix, Preferred: raPreferredCap, Valid: raValidCap}}
	}
	if routed {
		a.RouterLifetime = v.RouterLifetime
	}
	return a
}

// remaining is the lifetime left until end (zero end: infinite), capped,
// in whole seconds as the wire carries them.
func remaining(end, now time.Time, capd time.Duration) time.Duration {
	if end.IsZero() {
		return capd
	}
	return min(max(end.Sub(now).Truncate(time.Second), 0), capd)
}

func ndpPreference(p policy.RouterPreference) ndp.Preference {
	switch p {
	case policy.PreferenceLow:
		return ndp.Low
	case policy.PreferenceHigh:
		return ndp.High
	}
	return ndp.Medium
}

// radvStatus is the announcement part of the status's lan.ipv6; nil
// without a sender.
func (d *Daemon) radvStatus() *control.LAN6Announce {
	r := d.x.radv.Load()
	if r == nil {
		return nil
	}
	st := r.s.Status()
	out := &control.LAN6Announce{Interface: r.spec.Interface, Active: st.Active, RouterLifetime: int64(st.Advert.RouterLifetime / time.Second),
		LastSent: st.LastSent, Sent: st.Sent, Solicited: st.Solicited, Error: st.Error, Prefixes: []control.LAN6Prefix{}}
	for _, p := range st.Advert.Prefixes {
		state := "preferred"
		if p.Deprecated() {
			state = "deprecated"
		}
		out.Prefixes = append(out.Prefixes, control.LAN6Prefix{Prefix: p.Prefix, Uplink: p.Uplink, State: state,
			PreferredLifetime: int64(p.Preferred / time.Second), ValidLifetime: int64(p.Valid / time.Second)})
	}
	return out
}

// radvMetrics is metrics.Sources.RA: the sender's state at the scrape.
func (d *Daemon) radvMetrics() (metrics.RA, bool) {
	r := d.x.radv.Load()
	if r == nil {
		return metrics.RA{}, false
	}
	st := r.s.Status()
	out := metrics.RA{RouterLifetime: st.Advert.RouterLifetime, Sent: st.Sent, LastSent: st.LastSent}
	if !st.Active {
		out.RouterLifetime = 0
	}
	for _, p := range st.Advert.Prefixes {
		out.Prefixes = append(out.Prefixes, metrics.RAPrefix{Prefix: p.Prefix.String(), Uplink: p.Uplink, Deprecated: p.Deprecated(), Preferred: p.Preferred, Valid: p.Valid})
	}
	return out, true
}
