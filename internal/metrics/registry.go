package metrics

import (
	"bytes"
	"strings"
	"sync"
	"time"
)

// States an uplink can be in (the health machine's names); the state gauge
// has one series per state, 1 for the current one.
var states = [...]string{"down", "checking", "up", "failed"}

// passBuckets cover a pass from well under a millisecond (nftables, a few
// uplinks) to the tens of milliseconds iptables-nft takes.
var passBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// Registry holds the daemon's series. A nil *Registry is metrics off: every
// method is a no-op. The methods are safe for concurrent use.
type Registry struct {
	set          *seriesSet
	proc         *procStart
	passes       *counter
	passFailures *counter
	passDuration *histogram
	repairs      *counter
	overflows    *counter

	mu         sync.Mutex
	uplinks    map[string]*uplinkSeries
	sources    Sources
	publishers map[[3]string]*counter // attempts by uplink, publisher, result
}

type uplinkSeries struct {
	label       string // `uplink="NAME"`
	state       [len(states)]*gauge
	loss, rtt   *gauge // nil while unknown
	jitter      *gauge // nil while unknown
	transitions *counter
	reconnects  *counter
	drained     *gauge
	degraded    *gauge
	v6          *ipv6Series // nil while the uplink has ipv6 off
}

// ipv6Series are the series of an uplink's IPv6 side (docs/ipv6.md): the
// same as the IPv4 ones under uplinkd_uplink_ipv6_* names, so that the
// existing series keep their labels.
type ipv6Series struct {
	state             [len(states)]*gauge
	loss, rtt, jitter *gauge // nil while unknown
	transitions       *counter
	last              string // the state set last, to count transitions
}

// New returns a Registry with the daemon-wide series at zero. Call it only
// when metrics are on; uplink series appear with the first SetUplink.
func New() *Registry {
	s := newSeriesSet()
	return &Registry{
		set:          s,
		proc:         newProcStart(),
		passes:       s.counter("uplinkd_passes_total"),
		passFailures: s.counter("uplinkd_pass_failures_total"),
		passDuration: s.histogram("uplinkd_pass_duration_seconds", passBuckets),
		repairs:      s.counter("uplinkd_repairs_total"),
		overflows:    s.counter("uplinkd_netlink_overflows_total"),
		uplinks:      map[string]*uplinkSeries{},
		publishers:   map[[3]string]*counter{},
	}
}

// writeTo writes one scrape: the registered series, the Sources' and the
// process's own, in that order (VictoriaMetrics' order: the Set, its
// metrics writers, WriteProcessMetrics).
func (r *Registry) writeTo(w *bytes.Buffer) {
	r.set.writeTo(w)
	r.writeLive(w)
	writeGoMetrics(w)
	r.proc.writeProcessMetrics(w)
}

// PassDone records one pass of the daemon's loop and how long it took;
// failed when applying it returned an error.
func (r *Registry) PassDone(d time.Duration, failed bool) {
	if r == nil {
		return
	}
	r.passes.Inc()
	if failed {
		r.passFailures.Inc()
	}
	r.passDuration.Update(d.Seconds())
}

// Repair records a pass that put back kernel state someone else changed.
func (r *Registry) Repair() {
	if r == nil {
		return
	}
	r.repairs.Inc()
}

// Overflow records a netlink receive buffer overflow (the daemon resyncs).
func (r *Registry) Overflow() {
	if r == nil {
		return
	}
	r.overflows.Inc()
}

// Probe is an uplink's last finished probe round. A negative field is
// unknown (no health check, no round finished, no probe answered, fewer than
// two answered for Jitter) and its series is removed.
type Probe struct {
	Loss   float64       // fraction 0..1 of the round's probes unanswered
	RTT    time.Duration // mean RTT of the answered probes
	Jitter time.Duration // population standard deviation of those RTTs
}

// SetUplink sets an uplink's state (down, checking, up or failed) and its
// last probe round. The daemon calls it for every uplink after every pass
// and every finished probe round.
func (r *Registry) SetUplink(name, state string, p Probe) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.uplinkLocked(name)
	for i, s := range states {
		v := 0.0
		if s == state {
			v = 1
		}
		u.state[i].Set(v)
	}
	u.loss = r.optionalGauge(u.loss, "uplinkd_uplink_loss_ratio{"+u.label+"}", p.Loss)
	u.rtt = r.optionalGauge(u.rtt, "uplinkd_uplink_rtt_seconds{"+u.label+"}", p.RTT.Seconds())
	u.jitter = r.optionalGauge(u.jitter, "uplinkd_uplink_jitter_seconds{"+u.label+"}", p.Jitter.Seconds())
}

func (r *Registry) optionalGauge(g *gauge, name string, v float64) *gauge {
	if v < 0 {
		if g != nil {
			r.set.remove(name)
		}
		return nil
	}
	if g == nil {
		g = r.set.gauge(name)
	}
	g.Set(v)
	return g
}

// SetUplinkIPv6 sets the state and last probe round of an uplink's IPv6
// side (uplinkd_uplink_ipv6_*), counting a change of state as a
// transition. State "" is an uplink with ipv6 off: its IPv6 series go.
func (r *Registry) SetUplinkIPv6(name, state string, p Probe) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.uplinkLocked(name)
	if state == "" {
		r.removeIPv6Locked(u)
		return
	}
	v := u.v6
	if v == nil {
		v = &ipv6Series{transitions: r.set.counter("uplinkd_uplink_ipv6_transitions_total{" + u.label + "}")}
		for i, s := range states {
			v.state[i] = r.set.gauge(`uplinkd_uplink_ipv6_state{` + u.label + `,state="` + s + `"}`)
		}
		u.v6 = v
	} else if v.last != state {
		v.transitions.Inc()
	}
	v.last = state
	for i, s := range states {
		v.state[i].Set(b2f(s == state))
	}
	v.loss = r.optionalGauge(v.loss, "uplinkd_uplink_ipv6_loss_ratio{"+u.label+"}", p.Loss)
	v.rtt = r.optionalGauge(v.rtt, "uplinkd_uplink_ipv6_rtt_seconds{"+u.label+"}", p.RTT.Seconds())
	v.jitter = r.optionalGauge(v.jitter, "uplinkd_uplink_ipv6_jitter_seconds{"+u.label+"}", p.Jitter.Seconds())
}

func (r *Registry) removeIPv6Locked(u *uplinkSeries) {
	v := u.v6
	if v == nil {
		return
	}
	u.v6 = nil
	for _, s := range states {
		r.set.remove(`uplinkd_uplink_ipv6_state{` + u.label + `,state="` + s + `"}`)
	}
	r.set.remove("uplinkd_uplink_ipv6_transitions_total{" + u.label + "}")
	r.optionalGauge(v.loss, "uplinkd_uplink_ipv6_loss_ratio{"+u.label+"}", -1)
	r.optionalGauge(v.rtt, "uplinkd_uplink_ipv6_rtt_seconds{"+u.label+"}", -1)
	r.optionalGauge(v.jitter, "uplinkd_uplink_ipv6_jitter_seconds{"+u.label+"}", -1)
}

// SetDrained sets whether the uplink is drained by hand (`uplinkd drain`).
func (r *Registry) SetDrained(name string, drained bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	u := r.uplinkLocked(name)
	r.mu.Unlock()
	u.drained.Set(b2f(drained))
}

// SetDegraded sets whether the uplink is at the degraded quality level
// ([uplink.check] warn_loss, warn_latency).
func (r *Registry) SetDegraded(name string, degraded bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	u := r.uplinkLocked(name)
	r.mu.Unlock()
	u.degraded.Set(b2f(degraded))
}

// Transition records a change of the uplink's state.
func (r *Registry) Transition(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	u := r.uplinkLocked(name)
	r.mu.Unlock()
	u.transitions.Inc()
}

// Reconnect records a reconnect attempt for the uplink.
func (r *Registry) Reconnect(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	u := r.uplinkLocked(name)
	r.mu.Unlock()
	u.reconnects.Inc()
}

// RemoveUplink drops every series of an uplink a reload removed.
func (r *Registry) RemoveUplink(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.uplinks[name]
	if u == nil {
		return
	}
	delete(r.uplinks, name)
	for _, s := range states {
		r.set.remove(`uplinkd_uplink_state{` + u.label + `,state="` + s + `"}`)
	}
	r.set.remove("uplinkd_uplink_transitions_total{" + u.label + "}")
	r.set.remove("uplinkd_uplink_reconnects_total{" + u.label + "}")
	r.set.remove("uplinkd_uplink_drained{" + u.label + "}")
	r.set.remove("uplinkd_uplink_degraded{" + u.label + "}")
	r.optionalGauge(u.loss, "uplinkd_uplink_loss_ratio{"+u.label+"}", -1)
	r.optionalGauge(u.rtt, "uplinkd_uplink_rtt_seconds{"+u.label+"}", -1)
	r.optionalGauge(u.jitter, "uplinkd_uplink_jitter_seconds{"+u.label+"}", -1)
	r.removeIPv6Locked(u)
}

func (r *Registry) uplinkLocked(name string) *uplinkSeries {
	if u := r.uplinks[name]; u != nil {
		return u
	}
	u := &uplinkSeries{label: `uplink="` + escapeLabel(name) + `"`}
	for i, s := range states {
		u.state[i] = r.set.gauge(`uplinkd_uplink_state{` + u.label + `,state="` + s + `"}`)
	}
	u.transitions = r.set.counter("uplinkd_uplink_transitions_total{" + u.label + "}")
	u.reconnects = r.set.counter("uplinkd_uplink_reconnects_total{" + u.label + "}")
	u.drained = r.set.gauge("uplinkd_uplink_drained{" + u.label + "}")
	u.degraded = r.set.gauge("uplinkd_uplink_degraded{" + u.label + "}")
	r.uplinks[name] = u
	return u
}

// escapeLabel escapes a label value as the Prometheus text format wants.
// A function, not a package variable, so that metrics off allocates nothing.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
