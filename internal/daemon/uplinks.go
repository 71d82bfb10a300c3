package daemon

import (
	"context"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// uplinkRuntime is what lives across passes (and reloads) for one uplink:
// its health machines, its probers and its reconnector.
type uplinkRuntime struct {
	name string
	// probeSide is the IPv4 side (embedded: most of the daemon knows only
	// it); v6 probes the IPv6 targets of an uplink with ipv6 on, with a
	// health machine of its own (docs/ipv6.md).
	probeSide
	v6 probeSide

	reconnSpec     hooks.ReconnectSpec
	reconn         *hooks.Reconnector // nil: reconnecting not configured
	reconnectAfter time.Duration
	troubleSince   time.Time // link present but unusable, or probes failed
	manualUntil    time.Time // a reconnect asked for on the control socket is under way until then (control.go)

	hooks []hooks.HookSpec
}

// probeSide is one address family's probing of an uplink: the check with
// that family's targets, its health machine and its prober.
type probeSide struct {
	check  *policy.Check
	health *policy.HealthMachine // nil without targets of the family: link state alone decides

	proberGen    int
	proberCancel context.CancelFunc
	proberSource netip.Addr
	proberIface  string
	rounds       map[uint64]*probeRound
	// trafficArmed tells the running traffic watcher (traffic_trigger)
	// that the uplink is up; nil without one.
	trafficArmed *atomic.Bool
	// burstTimeout is the timeout, in nanoseconds, of the traffic
	// watcher's next burst (burstTimeoutFor), set after every round; nil
	// without a watcher.
	burstTimeout *atomic.Int64
	// last is the latest finished probe round of the running prober, for
	// the status and metrics; nil before its first round.
	last *roundStats
	// addr is the side's address at the last pass (the IPv6 side's
	// UPLINKD_NEW_IP).
	addr netip.Addr
}

// splitCheck divides an uplink's check by the family of its targets:
// targets that name an IPv6 address (of any method) probe the uplink's IPv6
// (the loader accepts them only with ipv6 on); everything else, host names
// included, its IPv4. A side without targets gets no check. Reliability is
// capped at the side's number of targets.
func splitCheck(c *policy.Check) (v4, v6 *policy.Check) {
	if c == nil {
		return nil, nil
	}
	var t4, t6 []string
	for _, t := range c.Targets {
		if a, ok := policy.ProbeTargetAddr(c.Method, t); ok && a.Is6() && !a.Is4In6() {
			t6 = append(t6, t)
		} else {
			t4 = append(t4, t)
		}
	}
	side := func(targets []string) *policy.Check {
		if len(targets) == 0 {
			return nil
		}
		cc := *c
		cc.Targets = targets
		cc.Reliability = min(cc.Reliability, len(targets))
		return &cc
	}
	return side(t4), side(t6)
}

type probeRound struct {
	results, ok int
	// lost counts the targets whose round's first probe went unanswered
	// (a retry may still have answered): the loss figures.
	lost int
	rtts []time.Duration
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
	rt   *uplinkRuntime
	side *probeSide
	gen  int
	r    probe.Result
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
		c4, c6 := splitCheck(u.Check)
		rt.probeSide.setCheck(c4, d.clock.Now())
		rt.v6.setCheck(c6, d.clock.Now())
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
			rt.stopProbers()
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

// setCheck keeps the side's health machine while its check is unchanged,
// so a reload never resets a verdict.
func (p *probeSide) setCheck(c *policy.Check, now time.Time) {
	if reflect.DeepEqual(p.check, c) {
		return
	}
	p.stopProber()
	p.check, p.health = c, nil
	if c != nil {
		p.health = policy.NewHealthMachine(*c, now)
	}
}

func (rt *uplinkRuntime) stopProbers() {
	rt.stopProber()
	rt.v6.stopProber()
}

func (rt *probeSide) stopProber() {
	if rt.proberCancel != nil {
		rt.proberCancel()
		rt.proberCancel = nil
	}
	rt.proberSource, rt.proberIface = netip.Addr{}, ""
	rt.rounds = nil
	rt.last = nil
}

// feedLinks gives every health machine the pass's link-layer verdict (the
// IPv6 ones links6's) and returns the probe verdicts for Compute.
func (d *Daemon) feedLinks(links []policy.UplinkState, links6 []policy.UplinkState6, now time.Time) policy.Health {
	health := policy.Health{}
	for i, st := range links {
		rt := d.runtimes[st.Name]
		if rt == nil {
			continue
		}
		if rt.health != nil {
			wasDegraded := rt.health.Degraded()
			d.logHealth(rt, &rt.probeSide, st.Iface, rt.health.Link(st.Usable, now))
			d.logQuality(rt, wasDegraded)
			health[st.Name] = rt.health.Usable()
		}
		if rt.v6.health != nil && i < len(links6) {
			rt.v6.addr = links6[i].Addr
			d.logHealth(rt, &rt.v6, st.Iface, rt.v6.health.Link(links6[i].Usable, now))
			health[policy.Health6Key(st.Name)] = rt.v6.health.Usable()
		}
	}
	return health
}

// afterApply starts/stops probers and drives reconnects once the kernel
// state of the pass is in place.
func (d *Daemon) afterApply(links []policy.UplinkState, links6 []policy.UplinkState6, now time.Time) {
	for i, st := range links {
		rt := d.runtimes[st.Name]
		if rt == nil {
			continue
		}
		d.manageProber(rt, &rt.probeSide, st.Usable, st.Addr, st.Iface)
		var st6 policy.UplinkState6
		if i < len(links6) {
			st6 = links6[i]
		}
		d.manageProber(rt, &rt.v6, st6.Usable, st6.Addr, st.Iface)
		d.manageReconnect(rt, st, now)
	}
}

// manageProber keeps one prober per uplink and family that has a check and
// a usable link, sending from the uplink's current address of the family: a
// new address restarts it at once.
func (d *Daemon) manageProber(rt *uplinkRuntime, side *probeSide, usable bool, src netip.Addr, iface string) {
	if side.check == nil || !usable {
		side.stopProber()
		return
	}
	if side.proberCancel != nil && side.proberSource == src && side.proberIface == iface {
		return
	}
	side.stopProber()
	side.proberGen++
	ctx, cancel := context.WithCancel(d.runCtx)
	side.proberCancel, side.proberSource, side.proberIface = cancel, src, iface
	side.rounds = map[uint64]*probeRound{}
	spec := probe.Spec{
		Uplink: rt.name, Method: string(side.check.Method), Targets: side.check.Targets,
		Interval: side.check.Interval, Timeout: side.check.Timeout, Retries: side.check.Retries,
		Source: src, Iface: iface, NetNS: d.netnsFD(),
	}
	gen := side.proberGen
	// The traffic trigger watches uplinkd's IPv4 counters: it belongs to
	// the IPv4 side's prober only.
	if side == &rt.probeSide {
		rt.trafficArmed, rt.burstTimeout = nil, nil
		if rt.check.TrafficTrigger {
			rt.trafficArmed, rt.burstTimeout = new(atomic.Bool), new(atomic.Int64)
			d.armTraffic(rt)
			rt.burstTimeout.Store(int64(burstTimeoutFor(rt.health, rt.check.Timeout)))
			armed, timeout, check := rt.trafficArmed, rt.burstTimeout, *rt.check
			d.wg.Go(func() { d.runTrafficWatch(ctx, rt, check, gen, spec, armed, timeout) })
		}
	}
	results := make(chan probe.Result, 4*len(spec.Targets))
	run := d.deps.Probe
	d.wg.Go(func() {
		for r := range results {
			select {
			case d.probes <- probeMsg{rt: rt, side: side, gen: gen, r: r}:
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
			d.log.Warn("prober stopped", "event", "probe", "uplink", rt.name, "iface", iface, "family", family(side == &rt.v6), "reason", err.Error())
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
	before, wasDegraded := rt.health.Usable(), rt.health.Degraded()
	d.logHealth(rt, &rt.probeSide, rt.proberIface, rt.health.TrafficConfirmed(m.reason, m.at))
	d.logQuality(rt, wasDegraded)
	if rt.health.Usable() == before {
		return false
	}
	d.publishStatus()
	return true
}

// onProbe folds one result into its round; a complete round goes to the
// health machine. It reports whether the verdict changed (a pass is due).
func (d *Daemon) onProbe(m probeMsg, now time.Time) bool {
	rt, side := m.rt, m.side
	if side == nil {
		side = &rt.probeSide
	}
	if d.runtimes[rt.name] != rt || m.gen != side.proberGen || side.health == nil || side.rounds == nil {
		return false // a retired prober's late result
	}
	rd := side.rounds[m.r.Round]
	if rd == nil {
		rd = &probeRound{}
		side.rounds[m.r.Round] = rd
		delete(side.rounds, m.r.Round-4) // a round that never completed
	}
	rd.results++
	if !m.r.OK || m.r.Sent > 1 {
		rd.lost++
	}
	if m.r.OK {
		rd.ok++
		rd.rtts = append(rd.rtts, m.r.RTT)
	}
	if rd.results < len(side.check.Targets) {
		return false
	}
	delete(side.rounds, m.r.Round)
	before, wasDegraded := side.health.Usable(), side.health.Degraded()
	d.logHealth(rt, side, side.proberIface, side.health.RoundLost(rd.ok, rd.lost, rd.rtts, now))
	targets := len(side.check.Targets)
	last := newRoundStats(targets, targets-rd.lost, rd.rtts)
	side.last = &last
	// A quality level change moves the default route's weights: a pass.
	// (The IPv6 side's level is not used: docs/design.md.)
	requal := side == &rt.probeSide && d.logQuality(rt, wasDegraded)
	if side.burstTimeout != nil {
		side.burstTimeout.Store(int64(burstTimeoutFor(side.health, side.check.Timeout)))
	}
	// The status and metrics show every round as it ends, not at the next
	// pass: with probes answering and nothing else happening there may be
	// no pass for hours.
	d.publishStatus()
	return side.health.Usable() != before || requal
}

// tick lets hold-downs and silence deadlines expire; true when a verdict
// changed.
func (d *Daemon) tick(now time.Time) bool {
	changed := false
	for _, rt := range d.runtimes {
		for _, side := range []*probeSide{&rt.probeSide, &rt.v6} {
			if side.health == nil {
				continue
			}
			before, wasDegraded := side.health.Usable(), side.health.Degraded()
			d.logHealth(rt, side, side.proberIface, side.health.Tick(now))
			if side == &rt.probeSide {
				d.logQuality(rt, wasDegraded)
			}
			changed = changed || side.health.Usable() != before
		}
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
	earlier(d.deleg.set.NextExpiry())
	for _, rt := range d.runtimes {
		if rt.health != nil {
			earlier(rt.health.NextDeadline())
		}
		if rt.v6.health != nil {
			earlier(rt.v6.health.NextDeadline())
		}
		if rt.reconn != nil && !rt.troubleSince.IsZero() {
			if at := rt.troubleSince.Add(rt.reconnectAfter); at.After(d.clock.Now()) {
				earlier(at)
			}
		}
	}
	return next
}

// family names a probe side in logs.
func family(v6 bool) string {
	if v6 {
		return "ipv6"
	}
	return "ipv4"
}

// logHealth writes one record per health transition (docs/design.md) and
// queues its hook event. An IPv6 transition is probe6-down or probe6-up
// (UPLINKD_FAMILY=ipv6, UPLINKD_NEW_IP the address probed from), so a hook
// on probe-down keeps meaning the uplink's IPv4, and it drives no
// reconnect (docs/ipv6.md).
func (d *Daemon) logHealth(rt *uplinkRuntime, side *probeSide, iface string, tr policy.Transition) {
	if !tr.Changed() {
		return
	}
	v6 := side == &rt.v6
	if !v6 {
		d.armTraffic(rt)
	}
	event := "health"
	switch tr.To {
	case policy.HealthFailed:
		event = "probe-down"
	case policy.HealthUp:
		event = "probe-up"
	}
	ev := hooks.HookEvent{Uplink: rt.name, Iface: iface, Reason: tr.Reason, Family: family(v6)}
	msg := "uplink " + tr.To.String()
	if v6 {
		if event != "health" {
			event = strings.Replace(event, "probe", "probe6", 1)
		}
		msg = "uplink ipv6 " + tr.To.String()
		if side.addr.IsValid() {
			ev.NewIP = side.addr.String()
		}
	}
	ev.Event = event
	loss, rtt := side.health.Stats()
	attrs := []any{"event", event, "uplink", rt.name, "iface", iface, "family", ev.Family}
	if ev.NewIP != "" {
		attrs = append(attrs, "new_ip", ev.NewIP)
	}
	d.log.Info(msg, append(attrs, "from", tr.From.String(), "to", tr.To.String(), "reason", tr.Reason, "loss", loss, "rtt", rtt)...)
	d.queueHook(rt, ev)
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

func (d *Daemon) netnsFD() int { return netnsx.FD(d.opts.NetNS) }
