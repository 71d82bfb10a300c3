package daemon

import (
	"errors"
	"fmt"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/delegstate"
	"github.com/uplinkd/uplinkd/internal/metrics"
	"github.com/uplinkd/uplinkd/policy"
)

// delegated is the loop's state of the IPv6 prefixes delegated to the
// uplinks that the PD clients reported (`uplinkd event --delegated`),
// persisted in <state_dir>/delegated.json (internal/delegstate). The loop
// owns it; each pass hands the prefixes to Compute (Observed.Delegated)
// and the status snapshot carries a copy.
type delegated struct {
	set delegstate.Set
	// loadErr is why the file read at start was not used ("" when it was).
	loadErr string
	// tooShort are the uplinks whose delegation holds no [lan.ipv6]
	// subnet (logged when they join).
	tooShort map[string]bool
}

// loadDelegated reads the delegation state at start, without what expired
// while the daemon was not running. It never fails the start: a corrupt
// file is moved aside and reported (the PD client reports its prefix
// again at its next renewal).
func (d *Daemon) loadDelegated(cfg *policy.Config) {
	path := delegstate.Path(cfg.Daemon.StateDir)
	set, err := delegstate.Load(path)
	d.deleg.set = set
	if err != nil {
		d.deleg.loadErr = err.Error()
		reason := "unreadable"
		var ce *delegstate.CorruptError
		if errors.As(err, &ce) {
			reason = "corrupt"
		}
		d.log.Error("delegation state not used; no delegated prefix is known until the PD clients report again", "event", "delegated", "path", path, "reason", reason, "error", err.Error())
	}
	d.expireDelegated(d.clock.Now())
	for _, iface := range set.Ifaces() {
		cur := set[iface][0]
		d.log.Info("delegated prefix (from the delegation state)", "event", "delegated", "iface", iface, "prefix", cur.Prefix.String(), "valid_until", cur.ValidUntil)
	}
}

// onDelegated takes a delegation event in the loop: learn or end the
// interface's delegation in memory. True when the prefixes changed (a pass
// is due); the caller answers the hook first and then saves the file
// (saveDelegated): an fsync must not eat the hook's 90 ms. An interface no uplink has is refused, so a
// hook on the wrong interface is seen; an uplink that does not use its
// delegation (ipv6 off, [lan.ipv6] mode off) keeps it, with a warning.
func (d *Daemon) onDelegated(ev control.Event) (bool, error) {
	var u *policy.Uplink
	for i := range d.cfg.Uplinks {
		if d.cfg.Uplinks[i].Interface == ev.Iface {
			u = &d.cfg.Uplinks[i]
		}
	}
	if u == nil {
		return false, fmt.Errorf("no [[uplink]] has interface %q", ev.Iface)
	}
	now := d.clock.Now()
	var changed bool
	if ev.Delegated == control.DelegatedNone {
		changed = d.deleg.set.End(ev.Iface)
		d.log.Info("delegated prefix ended", "event", "delegated", "uplink", u.Name, "iface", ev.Iface, "reason", "PD client: none")
	} else {
		p := ev.DelegatedPrefix()
		prev := ""
		if cur := d.deleg.set[ev.Iface]; len(cur) > 0 {
			prev = cur[0].Prefix.String()
		}
		changed = d.deleg.set.Learn(ev.Iface, p, delegstate.Lifetimes{Preferred: ev.PreferredLifetime, Valid: ev.ValidLifetime}, now)
		level := d.log.Debug // a renewal
		if changed {
			level = d.log.Info
		}
		level("delegated prefix learned", "event", "delegated", "uplink", u.Name, "iface", ev.Iface, "prefix", p.String(), "previous", prev,
			"valid_until", d.deleg.set[ev.Iface][0].ValidUntil)
		switch {
		case !u.IPv6:
			d.log.Warn("delegated prefix not used: the uplink has ipv6 off", "event", "delegated", "uplink", u.Name, "prefix", p.String())
		case d.cfg.LAN.IPv6.Mode == policy.LAN6Off:
			d.log.Warn("delegated prefix not used: [lan.ipv6] mode is off", "event", "delegated", "uplink", u.Name, "prefix", p.String())
		case u.DelegatedPrefix.IsValid():
			d.log.Warn("delegated prefix not used: the uplink's delegated_prefix is configured", "event", "delegated", "uplink", u.Name, "prefix", p.String(), "configured", u.DelegatedPrefix.String())
		}
	}
	return changed, nil
}

// expireDelegated drops the delegations whose time is over; true when one
// went (and the file was rewritten).
func (d *Daemon) expireDelegated(now time.Time) bool {
	gone := d.deleg.set.Expire(now)
	for _, g := range gone {
		d.log.Info("delegated prefix expired", "event", "delegated", "iface", g.Iface, "prefix", g.Prefix.String(), "valid_until", g.ValidUntil, "replaced", g.Replaced)
	}
	if len(gone) > 0 {
		d.saveDelegated()
	}
	return len(gone) > 0
}

// saveDelegated writes the file. A failure is logged and the prefixes
// are kept in memory: the daemon routes them all the same, and a restart
// learns them again from the PD client's next renewal.
func (d *Daemon) saveDelegated() {
	path := delegstate.Path(d.cfg.Daemon.StateDir)
	if err := delegstate.Save(path, d.deleg.set); err != nil {
		d.log.Error("cannot save the delegation state; kept in memory", "event", "delegated", "path", path, "error", err.Error())
	}
}

// npt6Maps are the NPTv6 mappings of this pass (policy.NPT6Maps). An
// uplink with ipv6 on whose current delegation does not hold the [lan.ipv6]
// subnet gets none: logged once each time that changes.
func (d *Daemon) npt6Maps(obs policy.Observed) []policy.NPT6 {
	maps := policy.NPT6Maps(d.cfg, obs)
	if d.cfg.LAN.IPv6.Mode != policy.LAN6NPT {
		d.deleg.tooShort = nil
		return maps
	}
	short := map[string]bool{}
	for i := range d.cfg.Uplinks {
		u := &d.cfg.Uplinks[i]
		ps, _ := policy.Delegated(u, obs)
		if !u.IPv6 || len(ps) == 0 {
			continue
		}
		if _, ok := policy.LANSubnet6(ps[0], d.cfg.LAN.IPv6.Subnet); !ok {
			short[u.Name] = true
			if !d.deleg.tooShort[u.Name] {
				d.log.Warn("delegated prefix too short for [lan.ipv6] subnet; no NPTv6 through the uplink", "event", "delegated",
					"uplink", u.Name, "prefix", ps[0].String(), "subnet", d.cfg.LAN.IPv6.Subnet)
			}
		}
	}
	d.deleg.tooShort = short
	return maps
}

// lan6Status is the status's lan.ipv6: nil with mode off. It runs in the
// loop (buildStatus), which owns the delegations.
func (d *Daemon) lan6Status() *control.LAN {
	mode := d.cfg.LAN.IPv6.Mode
	if mode == policy.LAN6Off || mode == "" {
		return nil
	}
	st := &control.LAN6{Mode: string(mode), Prefix: d.cfg.LAN.IPv6.Prefix, Uplinks: []control.LAN6Uplink{}}
	obs := policy.Observed{Delegated: d.deleg.set.Prefixes()}
	for i := range d.cfg.Uplinks {
		u := &d.cfg.Uplinks[i]
		if !u.IPv6 {
			continue
		}
		cu := control.LAN6Uplink{Name: u.Name}
		ps, src := policy.Delegated(u, obs)
		if len(ps) > 0 {
			cu.Delegated, cu.Source = ps[0], string(src)
			if src == policy.DelegationLearned {
				ds := d.deleg.set[u.Interface]
				cu.Learned, cu.PreferredUntil, cu.ValidUntil = ds[0].Learned, ds[0].PreferredUntil, ds[0].ValidUntil
				cu.Former = ps[1:]
			}
			if mode == policy.LAN6NPT {
				cu.NPT, _ = policy.LANSubnet6(ps[0], d.cfg.LAN.IPv6.Subnet)
			}
		}
		st.Uplinks = append(st.Uplinks, cu)
	}
	return &control.LAN{IPv6: st}
}

// lan6Metrics is metrics.Sources.LAN6: the delegations of the status
// snapshot.
func (d *Daemon) lan6Metrics() []metrics.Delegation {
	st := d.x.status.Load()
	if st == nil || st.LAN == nil || st.LAN.IPv6 == nil {
		return nil
	}
	var out []metrics.Delegation
	for _, u := range st.LAN.IPv6.Uplinks {
		if u.Delegated.IsValid() {
			out = append(out, metrics.Delegation{Uplink: u.Name, Prefix: u.Delegated.String(), Source: u.Source,
				PreferredUntil: u.PreferredUntil, ValidUntil: u.ValidUntil})
		}
	}
	return out
}
