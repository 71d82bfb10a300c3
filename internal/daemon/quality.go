package daemon

import (
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
)

// The degraded level (issue 20): a health machine whose check has
// warn_loss or warn_latency says whether its up uplink is degraded
// (policy.HealthMachine.Degraded); the pass hands the set to
// policy.ComputeWith, which lowers the uplink's weight in the default
// route or takes it out, per the check's degraded. A level change is one
// journal record (event=quality) and a pass.

// degradedSet is the uplinks whose IPv4 health machine is at the degraded
// level now; nil when none is.
func (d *Daemon) degradedSet() policy.Degraded {
	var out policy.Degraded
	for name, rt := range d.runtimes {
		if rt.health != nil && rt.health.Degraded() {
			if out == nil {
				out = policy.Degraded{}
			}
			out[name] = true
		}
	}
	return out
}

// logQuality writes the record of a quality level change of rt's IPv4
// side (wasDegraded is the level before the input that changed it) and
// reports whether the level changed: then the default route's weights
// change, and a pass is due.
func (d *Daemon) logQuality(rt *uplinkRuntime, wasDegraded bool) bool {
	h := rt.health
	if h == nil || h.Degraded() == wasDegraded {
		return false
	}
	level, reason := "good", h.DegradedReason()
	if h.Degraded() {
		level = "degraded"
	}
	if reason == "" {
		reason = "uplink " + h.State().String()
	}
	loss, rtt := h.Stats()
	jitter, _ := h.Jitter()
	d.log.Info("uplink quality "+level, "event", "quality", "uplink", rt.name, "iface", rt.proberIface,
		"level", level, "reason", reason, "loss", loss, "rtt", rtt, "jitter", jitter.Round(time.Microsecond))
	return true
}

// healthWindow is h's window figures for the status; nil before its first
// round.
func healthWindow(h *policy.HealthMachine) *control.Window {
	if h == nil || h.WindowRounds() == 0 {
		return nil
	}
	loss, rtt := h.Stats()
	w := &control.Window{Rounds: h.WindowRounds(), Loss: loss}
	if loss < 1 {
		w.RTTms = millis(rtt)
	}
	if j, ok := h.Jitter(); ok {
		w.JitterMs = millis(j)
	}
	return w
}
