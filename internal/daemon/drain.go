package daemon

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/drainstate"
	"github.com/uplinkd/uplinkd/policy"
)

// drain is the loop's state of the uplinks drained by hand (`uplinkd
// drain`): the set persisted in <state_dir>/drained.json, and what the
// status reports about it. The loop owns it; the status snapshot carries
// copies.
type drain struct {
	set drainstate.Set
	// loadErr is why the file read at start was not used ("" when it was).
	loadErr string
	// unknown are names in set that the running config has no uplink of:
	// kept in the file (the uplink may come back with a later config), but
	// ignored and reported.
	unknown []string

	// The inputs of the last pass's Compute, for DrainRefusal.
	lastObs   policy.Observed
	lastLinks []policy.UplinkState
}

// loadDrained reads the drain state of cfg's state_dir at start. It never
// fails the start: a corrupt file is moved aside (drainstate.Load) and
// reported, in the log and in the status's daemon.error.
func (d *Daemon) loadDrained(cfg *policy.Config) {
	path := drainstate.Path(cfg.Daemon.StateDir)
	set, err := drainstate.Load(path)
	d.drain.set = set
	if err != nil {
		d.drain.loadErr = err.Error()
		var ce *drainstate.CorruptError
		reason := "unreadable"
		if errors.As(err, &ce) {
			reason = "corrupt"
		}
		d.log.Error("drain state not used; no uplink is drained", "event", "drain", "path", path, "reason", reason, "error", err.Error())
	}
	for _, n := range set.Names() {
		if cfg.UplinkByName(n) != nil {
			d.log.Info("uplink drained (from the drain state)", "event", "drain", "uplink", n,
				"since", set[n].Since, "uid", set[n].UID, "pid", set[n].PID)
		}
	}
	d.noteUnknownDrained(cfg)
}

// noteUnknownDrained finds the drained names cfg has no uplink of (at start
// and after a reload) and logs those that are new.
func (d *Daemon) noteUnknownDrained(cfg *policy.Config) {
	var unknown []string
	for _, n := range d.drain.set.Names() {
		if cfg.UplinkByName(n) == nil {
			unknown = append(unknown, n)
			if !slices.Contains(d.drain.unknown, n) {
				d.log.Warn("drained uplink is not in the config; ignoring it", "event", "drain", "uplink", n,
					"reason", "no [[uplink]] of that name")
			}
		}
	}
	d.drain.unknown = unknown
}

// drainedSet is the set Compute gets: configured uplinks only (Compute
// ignores other names anyway; the copy keeps Desired free of the file's
// leftovers).
func (d *Daemon) drainedSet() policy.Drained {
	if len(d.drain.set) == 0 {
		return nil
	}
	out := policy.Drained{}
	for n := range d.drain.set {
		if d.cfg.UplinkByName(n) != nil {
			out[n] = true
		}
	}
	return out
}

// currentHealth is the health machines' verdicts now, without feeding
// them anything (feedLinks is for passes).
func (d *Daemon) currentHealth() policy.Health {
	h := policy.Health{}
	for name, rt := range d.runtimes {
		if rt.health != nil {
			h[name] = rt.health.Usable()
		}
	}
	return h
}

// onDrain handles a drain or undrain request in the loop; true when the set
// changed and a pass is due.
func (d *Daemon) onDrain(req control.Drain) (bool, error) {
	name, who := req.Uplink, req.Caller
	verb := "drain"
	if req.Undrain {
		verb = "undrain"
	}
	_, drained := d.drain.set[name]
	if d.cfg.UplinkByName(name) == nil && !(req.Undrain && drained) {
		// An undrain may clear a name the config lost; nothing else may
		// name an uplink that is not configured.
		return false, fmt.Errorf("no uplink named %q", name)
	}
	if req.Undrain == !drained {
		state := "not drained"
		if drained {
			state = "already drained"
		}
		d.log.Info(verb+" requested; nothing to do", "event", verb, "uplink", name, "uid", who.UID, "pid", who.PID, "reason", state)
		return false, nil
	}
	if !req.Undrain {
		obs, links := d.drain.lastObs, d.drain.lastLinks
		if !slices.EqualFunc(links, d.cfg.Uplinks, func(st policy.UplinkState, u policy.Uplink) bool { return st.Name == u.Name }) {
			// No pass yet with this config (a reload just now): judge on
			// the last snapshot with the new config's uplinks.
			links = policy.LinkStates(d.cfg, obs)
		}
		if err := policy.DrainRefusal(d.cfg, obs, links, d.currentHealth(), d.drainedSet(), name); err != nil {
			if !req.Force {
				d.log.Warn("drain refused", "event", verb, "uplink", name, "uid", who.UID, "pid", who.PID, "reason", err.Error())
				return false, fmt.Errorf("%w (use --force to drain it anyway)", err)
			}
			d.log.Warn("drain forced", "event", verb, "uplink", name, "uid", who.UID, "pid", who.PID, "reason", err.Error())
		}
	}
	next := drainstate.Set{}
	for n, e := range d.drain.set {
		next[n] = e
	}
	if req.Undrain {
		delete(next, name)
	} else {
		next[name] = drainstate.Entry{Name: name, Since: time.Now().UTC(), UID: who.UID, PID: who.PID}
	}
	// Persist first: a drain the daemon would forget at its next start is
	// refused instead of half done.
	if err := drainstate.Save(drainstate.Path(d.cfg.Daemon.StateDir), next); err != nil {
		d.log.Error(verb+" not done: the drain state cannot be saved", "event", verb, "uplink", name,
			"uid", who.UID, "pid", who.PID, "reason", err.Error())
		return false, err
	}
	d.drain.set = next
	d.drain.loadErr = "" // the file is good again
	d.noteUnknownDrained(d.cfg)
	msg := "uplink drained: out of the default route and its balancing"
	if req.Undrain {
		msg = "uplink undrained: back in the default route and its balancing"
	}
	d.log.Info(msg, "event", verb, "uplink", name, "uid", who.UID, "pid", who.PID, "force", req.Force)
	d.noteUplinkEvent(name, verb)
	return true, nil
}
