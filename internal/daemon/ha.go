package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/ha"
	"github.com/uplinkd/uplinkd/policy"
)

// Two-gateway HA wiring (package internal/ha holds the decisions). The hooks
// in the loop are few and marked "HA:" in daemon.go and uplinks.go:
//
//   - Daemon.ha is created in New (newHARuntime);
//   - Run selects on d.ha.wake(): a role event (SetRole), a stop command's
//     follow-up or the end of a new master's dial grace asks for a pass at
//     once (haWake);
//   - sync calls haSync after the kernel and the firewall are set: the track
//     file follows this pass's health, exclusive uplinks are stopped;
//   - manageReconnect asks haHoldsReconnect first: an exclusive uplink is
//     never dialled on a box that is not MASTER;
//   - Run's exit calls haClose last, after the supervisor stopped the
//     components and the handles are closed: the track file says "stopped"
//     (FAULT).

// ErrHAOff is SetRole's answer when [ha] track_file is not set.
var ErrHAOff = errors.New("two-gateway HA is off ([ha] track_file is not set)")

// haMsg is what reaches the loop: a role from keepalived, only a wake-up
// (role empty) when a stop command's restop interval or a dial grace ends, or
// word that another process changed the track file (trackChanged).
type haMsg struct {
	role         ha.Role
	at           time.Time
	trackChanged bool
}

type haRuntime struct {
	msgs chan haMsg

	// Owned by the loop.
	state ha.State
	track *ha.TrackFile
	// stopWatch ends the watch on track's file (haWatchTrack); trackDirty
	// says the watch saw it changed (set by the watch's goroutine, so that
	// a wake-up dropped on a full queue is not lost: any message looks).
	stopWatch  context.CancelFunc
	trackDirty atomic.Bool
	stops      map[string]*haStop
	// graceTimer wakes the loop when a dial grace ends (WithDialGrace).
	graceTimer *time.Timer
	graceWake  time.Time

	mu      sync.Mutex // guards the snapshot below, read by other goroutines
	enabled bool
	snap    ha.State
	observe func(role ha.Role, since time.Time)
}

// wakeAt makes the loop run a pass at t (zero: nothing to wake for): when
// a new master's dial grace ends, its track file must count the exclusive
// uplink as it is.
func (h *haRuntime) wakeAt(t time.Time) {
	if t.IsZero() || t.Equal(h.graceWake) {
		return
	}
	if h.graceTimer != nil {
		h.graceTimer.Stop()
	}
	h.graceWake = t
	msgs := h.msgs
	h.graceTimer = time.AfterFunc(time.Until(t), func() {
		select {
		case msgs <- haMsg{at: time.Now()}:
		default: // a pass is coming anyway
		}
	})
}

type haStop struct {
	mu      sync.Mutex
	running bool
	last    time.Time
}

func newHARuntime(cfg *policy.Config) *haRuntime {
	now := time.Now()
	return &haRuntime{
		msgs:    make(chan haMsg, 16),
		state:   ha.NewState(now),
		snap:    ha.NewState(now),
		stops:   map[string]*haStop{},
		enabled: cfg.HA.Enabled(),
	}
}

// wake is the loop's channel; nil (never ready) on a daemon built without New.
func (h *haRuntime) wake() <-chan haMsg {
	if h == nil {
		return nil
	}
	return h.msgs
}

// SetRole hands a VRRP role reported by keepalived's notify script
// (`uplinkd event --role`) to the loop, which runs a pass at once: an
// exclusive uplink is dialled or stopped in that pass, never after a probe
// round. role is master, backup or fault (any case). The control socket's
// Handler.Event calls it; it blocks only until the loop's queue takes the
// event or ctx ends.
func (d *Daemon) SetRole(ctx context.Context, role string) error {
	r, err := ha.ParseRole(role)
	if err != nil {
		return err
	}
	h := d.ha
	h.mu.Lock()
	on := h.enabled
	h.mu.Unlock()
	if !on {
		return ErrHAOff
	}
	select {
	case h.msgs <- haMsg{role: r, at: time.Now()}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("role event: %w", ctx.Err())
	}
}

// HAState returns the role, since when it holds, and whether HA is on; safe
// from any goroutine (the control socket's Status, for control.HA).
func (d *Daemon) HAState() (role string, since time.Time, enabled bool) {
	h := d.ha
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.snap.Role), h.snap.Since, h.enabled
}

// HAStatus is the status's HA section (control.Status.HA): nil when HA is
// off. Safe from any goroutine.
func (d *Daemon) HAStatus() *control.HA {
	role, since, on := d.HAState()
	if !on {
		return nil
	}
	return &control.HA{Role: control.Role(role), Since: since}
}

// OnHARole sets f to be called from the loop on every role change (and once
// with the current role when HA is on at the first pass): the metrics
// registry's SetHARole. Call it before Run.
func (d *Daemon) OnHARole(f func(role string, since time.Time)) {
	d.ha.mu.Lock()
	defer d.ha.mu.Unlock()
	d.ha.observe = func(r ha.Role, since time.Time) { f(string(r), since) }
}

// haWake takes a message from the loop's HA channel and says whether a pass
// must follow (all but a track file put right).
func (d *Daemon) haWake(m haMsg) (pass bool) {
	h := d.ha
	if h.trackDirty.Swap(false) {
		d.haRestoreTrack()
	}
	if m.trackChanged {
		return false
	}
	if m.role == "" {
		return true
	}
	if !d.cfg.HA.Enabled() {
		// Off by a reload after the event was queued.
		return true
	}
	old, changed := h.state.Set(m.role, m.at)
	if !changed {
		d.log.Debug("ha role unchanged", "event", "ha-role", "role", string(m.role))
		return true
	}
	d.log.Info("ha role changed", "event", "ha-role", "role", string(m.role), "old_role", string(old))
	h.publish()
	d.radvRole()
	return true
}

// haWatchTrack watches the track file uplinkd writes from now on: when
// another process changes it, the loop puts the value back (haRestoreTrack).
func (d *Daemon) haWatchTrack() {
	h := d.ha
	if h.stopWatch != nil {
		h.stopWatch()
		h.stopWatch = nil
	}
	if h.track == nil || d.runCtx == nil {
		return
	}
	ctx, cancel := context.WithCancel(d.runCtx)
	msgs := h.msgs
	err := h.track.Watch(ctx, func() {
		h.trackDirty.Store(true)
		select {
		case msgs <- haMsg{at: time.Now(), trackChanged: true}:
		default: // the queue is full: the loop looks at the next message
		}
	})
	if err != nil {
		cancel()
		d.log.Warn("HA track file watch unavailable: a change by another process is put right only with the next weight change",
			"event", "ha-track", "path", h.track.Path(), "reason", err.Error())
		return
	}
	h.stopWatch = cancel
}

// haRestoreTrack writes the track file's value again when another process
// changed it: keepalived's init_file at its start can overwrite uplinkd's
// first write (ha.TrackFile.Restore).
func (d *Daemon) haRestoreTrack() {
	h := d.ha
	if h.track == nil {
		return
	}
	found, restored, err := h.track.Restore()
	w, _ := h.track.Last()
	switch {
	case err != nil:
		d.log.Error("writing the HA track file again", "event", "ha-track", "path", h.track.Path(), "found", found, "reason", err.Error())
	case restored:
		d.log.Warn("HA track file was changed by another process (keepalived's init_file at its start?); written again",
			"event", "ha-track", "path", h.track.Path(), "found", found, "weight", w)
	}
}

func (h *haRuntime) publish() {
	h.mu.Lock()
	h.snap = h.state
	f := h.observe
	h.mu.Unlock()
	if f != nil {
		f(h.state.Role, h.state.Since)
	}
}

// haSync runs in every pass once the kernel and the firewall are set: the
// track file gets this pass's health (written only when its value changes)
// and exclusive uplinks that are up on a box that is not MASTER are stopped.
func (d *Daemon) haSync(states []policy.UplinkState, now time.Time) {
	h := d.ha
	on := d.cfg.HA.Enabled()
	h.mu.Lock()
	h.enabled = on
	h.mu.Unlock()
	if !on {
		if h.track != nil {
			// Turned off by a reload: uplinkd no longer vouches for this
			// box, so the file keepalived may still track says so.
			d.haClose()
			h.track = nil
		}
		return
	}
	if h.track == nil {
		h.publish() // observers (metrics) get the role from the first pass on
	}
	if h.track == nil || h.track.Path() != d.cfg.HA.TrackFile {
		h.track = ha.NewTrackFile(d.cfg.HA.TrackFile)
		d.haWatchTrack()
	}
	counted, graceEnds := ha.WithDialGrace(d.cfg, states, h.state, now)
	h.wakeAt(graceEnds)
	w := ha.TrackWeight(d.cfg, counted, h.state.Role)
	old, had := h.track.Last()
	if changed, err := h.track.Write(w); err != nil {
		d.log.Error("writing the HA track file", "event", "ha-track", "path", h.track.Path(), "reason", err.Error())
	} else if changed {
		attrs := []any{"event", "ha-track", "path", h.track.Path(), "weight", w, "role", string(h.state.Role)}
		if had {
			attrs = append(attrs, "old_weight", old)
		}
		d.log.Info("HA track file written", attrs...)
	}
	for _, st := range states {
		u := d.cfg.UplinkByName(st.Name)
		if u == nil || u.HA.Mode != policy.HAExclusive {
			continue
		}
		s := h.stops[st.Name]
		if s == nil {
			s = &haStop{}
			h.stops[st.Name] = s
		}
		s.mu.Lock()
		dec := ha.Exclusive(ha.ExclusiveInput{Role: h.state.Role, RoleSince: h.state.Since, Up: st.Present, Stopping: s.running, LastStop: s.last}, now)
		if dec.Stop {
			s.running, s.last = true, now
		}
		s.mu.Unlock()
		if dec.Stop {
			d.haStop(st, s)
		}
	}
}

// haStop hangs an exclusive uplink up with its stop command, off the loop,
// and wakes the loop once the restop interval has passed, so that a link a
// late reconnect attempt brought up again is stopped again.
func (d *Daemon) haStop(st policy.UplinkState, s *haStop) {
	rt := d.runtimes[st.Name]
	if rt == nil || len(rt.reconnSpec.StopCommand) == 0 {
		return // the loader refuses an exclusive uplink without one
	}
	argv, timeout := rt.reconnSpec.StopCommand, rt.reconnSpec.Timeout
	if timeout <= 0 {
		timeout = policy.DefaultReconnectTimeout
	}
	role := d.ha.state.Role
	env := []string{"UPLINKD_EVENT=ha-stop", "UPLINKD_UPLINK=" + st.Name, "UPLINKD_IFACE=" + st.Iface, "UPLINKD_ROLE=" + string(role)}
	d.log.Info("stopping an exclusive uplink: this gateway is not the VRRP master", "event", "ha-stop",
		"uplink", st.Name, "iface", st.Iface, "role", string(role))
	ctx, msgs, log := d.runCtx, d.ha.msgs, d.log
	// In Run's wait group: Run returns only after the stop command ended
	// (its context, Run's, kills it at exit).
	d.wg.Go(func() {
		err := ha.RunStop(ctx, argv, env, timeout)
		s.mu.Lock()
		s.running = false
		wakeAt := s.last.Add(ha.RestopInterval)
		s.mu.Unlock()
		if err != nil {
			log.Warn("stop command of an exclusive uplink failed", "event", "ha-stop", "uplink", st.Name, "iface", st.Iface, "reason", err.Error())
		}
		select {
		case <-time.After(time.Until(wakeAt)):
		case <-ctx.Done():
			return
		}
		select {
		case msgs <- haMsg{at: time.Now()}:
		default: // a pass is coming anyway
		}
	})
}

// haHoldsReconnect reports whether HA forbids reconnecting the uplink now: an
// exclusive uplink on a box that is not MASTER. It also cancels what its
// reconnector had scheduled.
func (d *Daemon) haHoldsReconnect(rt *uplinkRuntime) bool {
	if !d.cfg.HA.Enabled() || d.ha.state.Role == ha.RoleMaster {
		return false
	}
	if u := d.cfg.UplinkByName(rt.name); u == nil || u.HA.Mode != policy.HAExclusive {
		return false
	}
	if rt.reconn != nil {
		rt.reconn.Down(false)
	}
	rt.troubleSince = time.Time{}
	return true
}

// haReconnectRefused is for the control socket's `uplinkd reconnect NAME`,
// called from the loop: an exclusive uplink is dialled by the MASTER only, so
// a manual reconnect of one on any other box is refused with the reason.
func (d *Daemon) haReconnectRefused(name string) error {
	u := d.cfg.UplinkByName(name)
	if !d.cfg.HA.Enabled() || u == nil || u.HA.Mode != policy.HAExclusive || d.ha.state.Role == ha.RoleMaster {
		return nil
	}
	return fmt.Errorf("uplink %q is exclusive: only the VRRP master dials it, and this gateway is %s", name, d.ha.state.Role)
}

// haClose runs when the loop ends: the track file then says "stopped"
// (ha.StoppedWeight, FAULT for keepalived whatever the file's weight), so
// the other gateway takes over after a clean stop. A killed uplinkd cannot
// do this; keepalived's track_process on uplinkd covers that (docs/two-gateways.md).
func (d *Daemon) haClose() {
	h := d.ha
	if h.graceTimer != nil {
		h.graceTimer.Stop()
	}
	if h.stopWatch != nil {
		h.stopWatch()
		h.stopWatch = nil
	}
	if h.track == nil {
		return
	}
	if _, err := h.track.Write(ha.StoppedWeight); err != nil {
		d.log.Error("writing the HA track file at exit", "event", "ha-track", "path", h.track.Path(), "reason", err.Error())
		return
	}
	d.log.Info("HA track file says stopped", "event", "ha-track", "path", h.track.Path(), "weight", ha.StoppedWeight)
}
