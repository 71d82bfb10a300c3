package daemon

import (
	"context"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// uplinkRuntime is what lives across passes (and reloads) for one uplink:
// its health machine, its prober and its reconnector.
type uplinkRuntime struct {
	name   string
	check  *policy.Check
	health *policy.HealthMachine // nil without [uplink.check]: link state alone decides

	proberGen    int
	proberCancel context.CancelFunc
	proberSource netip.Addr
	proberIface  string
	rounds       map[uint64]*probeRound
	// trafficArmed tells the running traffic watcher (traffic_trigger)
	// that the uplink is up; nil without one.
	trafficArmed *atomic.Bool
	// last is the latest finished probe round of the running prober, for
	// the status and metrics; nil before its first round.
	last *roundStats

	reconnSpec     hooks.ReconnectSpec
	reconn         *hooks.Reconnector // nil: reconnecting not configured
	reconnectAfter time.Duration
	troubleSince   time.Time // link present but unusable, or probes failed
	manualUntil    time.Time // a reconnect asked for on the control socket is under way until then (control.go)

	hooks []hooks.HookSpec
}

type probeRound struct {
	results, ok int
	rtts        []time.Duration
}

// roundStats is one finished probe round as `uplinkd status` and the
// metrics show it (docs/status.md: loss, rtt_ms and jitter_ms are of the
// last round, not of the health machine's window).
type roundStats struct {
	sent, answered int
	// rtt is the mean RTT of the answered probes; jitter their population
	// standard deviation around it. hasRTT: at least one answered;
	// hasJitter: at least two (a single RTT has no spread).
	rtt, jitter       time.Duration
	hasRTT, hasJitter bool
}

// newRoundStats summarises a round of sent probes, answered of which
// answered with rtts.
func newRoundStats(sent, answered int, rtts []time.Duration) roundStats {
	s := roundStats{sent: max(sent, answered, 1), answered: answered}
	if len(rtts) == 0 {
		return s
	}
	var sum float64
	for _, r := range rtts {
		sum += float64(r)
	}
	mean := sum / float64(len(rtts))
	s.rtt, s.hasRTT = time.Duration(math.Round(mean)), true
	if len(rtts) >= 2 {
		var sq float64
		for _, r := range rtts {
			sq += (float64(r) - mean) * (float64(r) - mean)
		}
		s.jitter, s.hasJitter = time.Duration(math.Round(math.Sqrt(sq/float64(len(rtts))))), true
	}
	return s
}

// loss is the fraction 0..1 of the round's probes that went unanswered.
func (s roundStats) loss() float64 {
	return float64(s.sent-min(s.answered, s.sent)) / float64(s.sent)
}

// probeMsg tags a result with the prober generation, so results of a prober
// that was restarted for a new source address are not mixed into new rounds.
type probeMsg struct {
	rt  *uplinkRuntime
	gen int
	r   probe.Result
}

// syncRuntimes creates, keeps or retires the runtimes to match cfg. A health
// machine survives a reload when its check is unchanged, so a reload never
// resets an uplink's verdict.
func (d *Daemon) syncRuntimes(cfg *policy.Config) {
	if d.runtimes == nil {
		d.runtimes = map[string]*uplinkRuntime{}
	}
	keep := map[string]bool{}
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		keep[u.Name] = true
		rt := d.runtimes[u.Name]
		if rt == nil {
			rt = &uplinkRuntime{name: u.Name}
			d.runtimes[u.Name] = rt
		}
		if !reflect.DeepEqual(rt.check, u.Check) {
			rt.stopProber()
			rt.check, rt.health = u.Check, nil
			if u.Check != nil {
				rt.health = policy.NewHealthMachine(*u.Check, d.clock.Now())
			}
		}
		spec, ok := hooks.ReconnectSpecFor(u)
		if !reflect.DeepEqual(spec, rt.reconnSpec) || (ok != (rt.reconn != nil)) {
			old := rt.reconn
			rt.reconn, rt.reconnSpec = nil, spec
			if ok {
				rt.reconn = hooks.NewReconnector(spec, d.log, d.clock, nil)
				d.watchReconnects(rt) // reconnect hook event, status, metrics
				// A reload never makes two dials at once: the new
				// reconnector takes over the attempt that runs, its
				// backoff and its dial window.
				rt.reconn.Adopt(old)
			}
			d.retireReconnector(old)
		}
		rt.reconnectAfter = 0
		if u.Reconnect != nil {
			rt.reconnectAfter = u.Reconnect.ReconnectAfter
		}
		rt.hooks = hooks.HookSpecsFor(u)
	}
	for name, rt := range d.runtimes {
		if !keep[name] {
			rt.stopProber()
			d.retireReconnector(rt.reconn)
			rt.reconn = nil
			// Its hook worker ends once the hooks already queued have run.
			d.hookRunner.Retire(name)
			delete(d.runtimes, name)
		}
	}
}

// retireReconnector closes a reconnector the uplink no longer uses in the
// background: Close waits for a running attempt (up to its timeout), and
// the loop must not. Run's exit waits for these goroutines, after ending
// their attempts.
func (d *Daemon) retireReconnector(r *hooks.Reconnector) {
	if r == nil {
		return
	}
	d.x.mu.Lock()
	for _, in := range d.x.info {
		if in.reconn == r {
			in.reconn = nil
		}
	}
	d.x.mu.Unlock()
	d.retired = slices.DeleteFunc(d.retired, (*hooks.Reconnector).Closed)
	d.retired = append(d.retired, r)
	d.wg.Go(r.Close)
}

func (rt *uplinkRuntime) stopProber() {
	if rt.proberCancel != nil {
		rt.proberCancel()
		rt.proberCancel = nil
	}
	rt.proberSource, rt.proberIface = netip.Addr{}, ""
	rt.rounds = nil
	rt.last = nil
}

// feedLinks gives every health machine the pass's link-layer verdict and
// returns the probe verdicts for Compute.
func (d *Daemon) feedLinks(links []policy.UplinkState, now time.Time) policy.Health {
	health := policy.Health{}
	for _, st := range links {
		rt := d.runtimes[st.Name]
		if rt == nil || rt.health == nil {
			continue
		}
		d.logHealth(rt, st.Iface, rt.health.Link(st.Usable, now))
		health[st.Name] = rt.health.Usable()
	}
	return health
}

// afterApply starts/stops probers and drives reconnects once the kernel
// state of the pass is in place.
func (d *Daemon) afterApply(links []policy.UplinkState, now time.Time) {
	for _, st := range links {
		rt := d.runtimes[st.Name]
		if rt == nil {
			continue
		}
		d.manageProber(rt, st)
		d.manageReconnect(rt, st, now)
	}
}

// manageProber keeps one prober per uplink that has a check and a usable
// link, sending from the uplink's current address: a new address restarts
// it at once.
func (d *Daemon) manageProber(rt *uplinkRuntime, st policy.UplinkState) {
	if rt.check == nil || !st.Usable {
		rt.stopProber()
		return
	}
	if rt.proberCancel != nil && rt.proberSource == st.Addr && rt.proberIface == st.Iface {
		return
	}
	rt.stopProber()
	rt.proberGen++
	ctx, cancel := context.WithCancel(d.runCtx)
	rt.proberCancel, rt.proberSource, rt.proberIface = cancel, st.Addr, st.Iface
	rt.rounds = map[uint64]*probeRound{}
	spec := probe.Spec{
		Uplink: rt.name, Method: string(rt.check.Method), Targets: rt.check.Targets,
		Interval: rt.check.Interval, Timeout: rt.check.Timeout,
		Source: st.Addr, Iface: st.Iface, NetNS: d.netnsFD(),
	}
	gen := rt.proberGen
	rt.trafficArmed = nil
	if rt.check.TrafficTrigger {
		rt.trafficArmed = new(atomic.Bool)
		d.armTraffic(rt)
		armed, check := rt.trafficArmed, *rt.check
		d.wg.Go(func() { d.runTrafficWatch(ctx, rt, check, gen, spec, armed) })
	}
	results := make(chan probe.Result, 4*len(spec.Targets))
	run := d.deps.Probe
	d.wg.Go(func() {
		for r := range results {
			select {
			case d.probes <- probeMsg{rt: rt, gen: gen, r: r}:
			case <-ctx.Done():
				// Drain, so the prober never blocks on a full channel.
				for range results {
				}
				return
			}
		}
	})
	d.wg.Go(func() {
		defer close(results)
		if err := run(ctx, spec, results); err != nil {
			d.log.Warn("prober stopped", "event", "probe", "uplink", rt.name, "iface", st.Iface, "reason", err.Error())
		}
	})
}

// armTraffic tells rt's traffic watcher whether the uplink is up: only
// then are its counters read.
func (d *Daemon) armTraffic(rt *uplinkRuntime) {
	if rt.trafficArmed != nil && rt.health != nil {
		rt.trafficArmed.Store(rt.health.State() == policy.HealthUp)
	}
}

// onTraffic applies a burst's verdict; true when the uplink's usability
// changed (a pass is due).
func (d *Daemon) onTraffic(m trafficMsg) bool {
	rt := m.rt
	if d.runtimes[rt.name] != rt || m.gen != rt.proberGen || rt.health == nil || !m.confirmed {
		return false // a retired watcher's late verdict
	}
	before := rt.health.Usable()
	d.logHealth(rt, rt.proberIface, rt.health.TrafficConfirmed(m.reason, m.at))
	if rt.health.Usable() == before {
		return false
	}
	d.publishStatus()
	return true
}

// onProbe folds one result into its round; a complete round goes to the
// health machine. It reports whether the verdict changed (a pass is due).
func (d *Daemon) onProbe(m probeMsg, now time.Time) bool {
	rt := m.rt
	if d.runtimes[rt.name] != rt || m.gen != rt.proberGen || rt.health == nil || rt.rounds == nil {
		return false // a retired prober's late result
	}
	rd := rt.rounds[m.r.Round]
	if rd == nil {
		rd = &probeRound{}
		rt.rounds[m.r.Round] = rd
		delete(rt.rounds, m.r.Round-4) // a round that never completed
	}
	rd.results++
	if m.r.OK {
		rd.ok++
		rd.rtts = append(rd.rtts, m.r.RTT)
	}
	if rd.results < len(rt.check.Targets) {
		return false
	}
	delete(rt.rounds, m.r.Round)
	before := rt.health.Usable()
	d.logHealth(rt, rt.proberIface, rt.health.Round(rd.ok, rd.rtts, now))
	last := newRoundStats(len(rt.check.Targets), rd.ok, rd.rtts)
	rt.last = &last
	// The status and metrics show every round as it ends, not at the next
	// pass: with probes answering and nothing else happening there may be
	// no pass for hours.
	d.publishStatus()
	return rt.health.Usable() != before
}

// tick lets hold-downs and silence deadlines expire; true when a verdict
// changed.
func (d *Daemon) tick(now time.Time) bool {
	changed := false
	for _, rt := range d.runtimes {
		if rt.health == nil {
			continue
		}
		before := rt.health.Usable()
		d.logHealth(rt, rt.proberIface, rt.health.Tick(now))
		changed = changed || rt.health.Usable() != before
	}
	return changed
}

// manageReconnect: an interface that is gone, has no carrier or no address
// needs a dial at once (for ppp the Reconnector leaves a live pppd to
// redial by itself); one whose address works but whose probes fail gets
// reconnect_after to recover by itself before its pppd is restarted. The
// moment the link has its address every pending attempt is canceled.
func (d *Daemon) manageReconnect(rt *uplinkRuntime, st policy.UplinkState, now time.Time) {
	if d.haHoldsReconnect(rt) { // HA: an exclusive uplink is dialled by the MASTER only
		return
	}
	failing := st.Present && st.Carrier && st.Usable && rt.health != nil && rt.health.State() == policy.HealthFailed
	troubled := st.Present && st.Carrier && (!st.Usable || failing)
	switch {
	case troubled && rt.troubleSince.IsZero():
		rt.troubleSince = now
	case !troubled:
		rt.troubleSince = time.Time{}
	}
	if rt.reconn == nil {
		return
	}
	switch {
	case !st.Present || !st.Carrier:
		rt.reconn.Set(hooks.NeedDial)
	case !st.Usable:
		if !now.Before(rt.troubleSince.Add(rt.reconnectAfter)) {
			rt.reconn.Set(hooks.NeedDial)
		}
	case failing:
		if !now.Before(rt.troubleSince.Add(rt.reconnectAfter)) {
			rt.reconn.Set(hooks.NeedRestart)
		}
	case now.Before(rt.manualUntil):
		// A reconnect asked for on the control socket runs to its end.
	default:
		rt.reconn.Set(hooks.NeedNone)
	}
}

// nextDeadline is the earliest time a health machine or a reconnect_after
// needs the loop's attention; zero when none.
func (d *Daemon) nextDeadline() time.Time {
	var next time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, rt := range d.runtimes {
		if rt.health != nil {
			earlier(rt.health.NextDeadline())
		}
		if rt.reconn != nil && !rt.troubleSince.IsZero() {
			if at := rt.troubleSince.Add(rt.reconnectAfter); at.After(d.clock.Now()) {
				earlier(at)
			}
		}
	}
	return next
}

// logHealth writes one record per health transition (docs/design.md).
func (d *Daemon) logHealth(rt *uplinkRuntime, iface string, tr policy.Transition) {
	if !tr.Changed() {
		return
	}
	d.armTraffic(rt)
	event := "health"
	switch tr.To {
	case policy.HealthFailed:
		event = "probe-down"
	case policy.HealthUp:
		event = "probe-up"
	}
	loss, rtt := rt.health.Stats()
	d.log.Info("uplink "+tr.To.String(), "event", event, "uplink", rt.name, "iface", iface,
		"from", tr.From.String(), "to", tr.To.String(), "reason", tr.Reason, "loss", loss, "rtt", rtt)
	d.queueHook(rt, hooks.HookEvent{Event: event, Uplink: rt.name, Iface: iface, Reason: tr.Reason})
}

// queueHook collects hook events of a pass; they run after the kernel state
// is set (docs/performance.md), in fireHooks.
func (d *Daemon) queueHook(rt *uplinkRuntime, ev hooks.HookEvent) {
	d.noteUplinkEvent(ev.Uplink, ev.Event) // status last_event, metrics
	if rt == nil || (len(rt.hooks) == 0 && d.x.hookDir == "") {
		return
	}
	d.pendingHooks = append(d.pendingHooks, pendingHook{rt.hooks, ev})
}

type pendingHook struct {
	specs []hooks.HookSpec
	ev    hooks.HookEvent
}

func (d *Daemon) fireHooks() {
	for _, h := range d.pendingHooks {
		d.hookRunner.Fire(h.specs, h.ev)
	}
	d.pendingHooks = d.pendingHooks[:0]
}

func (d *Daemon) netnsFD() int { return nsFD(d.opts.NetNS) }

// nsFD is the namespace fd the watcher and probers take: 0 for the
// process's own namespace.
func nsFD(ns netns.NsHandle) int {
	if ns < 0 {
		return 0
	}
	return int(ns)
}
