package daemon

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// The traffic trigger (issue 20, docs/design.md "Traffic-triggered
// detection"): an uplink with [uplink.check] traffic_trigger = true has its
// counters read every traffic_window/2 while it is up; when packets left
// through it during a whole window and none came back, a burst of probes to
// every target runs at once, and only a burst that nobody answers fails the
// uplink. Idle uplinks never trigger: they keep the probe schedule.

// Burst parameters: 3 probes per target, 50 ms apart. Three rounds make a
// random loss of p look like an outage with probability p^(3×targets)
// (20 % loss, 2 targets: 6.4e-5 per burst), and the 100 ms they span is
// short against the probe timeout the verdict waits for.
const (
	burstCount = 3
	burstGap   = 50 * time.Millisecond
)

// A burst waits for its answers burstRTTs × the slowest RTT of the last
// burstCleanRounds probe rounds when every probe of them answered, at
// least burstTimeoutFloor and at most the check's timeout; after a lost
// probe (or before that many rounds), the check's timeout. docs/design.md says why this cannot
// turn a slow line into a false failover.
const (
	burstRTTs         = 4
	burstTimeoutFloor = 200 * time.Millisecond
	burstCleanRounds  = 5
)

// burstTimeoutFor is the timeout of a burst on the uplink whose health
// machine is h, with check timeout timeout.
func burstTimeoutFor(h *policy.HealthMachine, timeout time.Duration) time.Duration {
	if h == nil {
		return timeout
	}
	slowest, ok := h.CleanMaxRTT(burstCleanRounds)
	if !ok {
		return timeout
	}
	return min(max(burstRTTs*slowest, burstTimeoutFloor), timeout)
}

// trafficSample is one read of an uplink's packet counters.
type trafficSample struct {
	at      time.Time
	in, out uint64
}

// trafficWatch is the trigger's pure logic for one uplink: counter samples
// go in, "start a burst now" comes out. No goroutines, no clock.
type trafficWatch struct {
	window time.Duration
	// minOut is how many packets must leave in a window without an answer
	// to suspect the uplink: more than one probe round's own packets, so a
	// lost probe on an idle uplink starts nothing.
	minOut uint64
	// holdOff: after a burst that was answered, none starts again for
	// this long (the check's interval), so a one-way flow (nothing ever
	// comes back) costs at most one burst per interval.
	holdOff time.Duration

	samples    []trafficSample // oldest first; spans at least a window once full
	bursting   bool
	quietUntil time.Time
}

func newTrafficWatch(window, holdOff time.Duration, targets int) *trafficWatch {
	return &trafficWatch{window: window, holdOff: holdOff, minOut: uint64(8 + 2*targets)}
}

// observe adds a sample. It returns a description of the silence when a
// burst should start now (and then waits for burstDone before another).
func (w *trafficWatch) observe(s trafficSample) (why string, burst bool) {
	if n := len(w.samples); n > 0 && (s.in < w.samples[n-1].in || s.out < w.samples[n-1].out) {
		w.samples = w.samples[:0] // the counters restarted (chains rewritten)
	}
	w.samples = append(w.samples, s)
	// Keep exactly one sample at least a window old: the base of the
	// comparison.
	for len(w.samples) > 2 && s.at.Sub(w.samples[1].at) >= w.window {
		w.samples = w.samples[1:]
	}
	base := w.samples[0]
	span := s.at.Sub(base.at)
	if span < w.window || w.bursting || s.at.Before(w.quietUntil) {
		return "", false
	}
	dOut, dIn := s.out-base.out, s.in-base.in
	if dIn != 0 || dOut < w.minOut {
		return "", false
	}
	w.bursting = true
	return fmt.Sprintf("%d packets out and none in for %s", dOut, span.Round(time.Millisecond)), true
}

// burstDone ends a burst. An answered one quiets the trigger for holdOff
// and restarts the comparison from the next sample.
func (w *trafficWatch) burstDone(confirmed bool, now time.Time) {
	w.bursting = false
	if !confirmed {
		w.quietUntil = now.Add(w.holdOff)
		w.samples = w.samples[:0]
	}
}

// trafficMsg is a burst's verdict for the loop.
type trafficMsg struct {
	rt        *uplinkRuntime
	gen       int
	confirmed bool
	reason    string
	at        time.Time
}

// BurstFunc runs one burst (probe.Burst).
type BurstFunc func(ctx context.Context, spec probe.Spec, count int, gap time.Duration) (probe.BurstResult, error)

// runTrafficWatch samples the counters of one uplink every window/2 until
// ctx is done (the prober's context: an address change or link loss ends
// it), while armed says the uplink is up. It waits on the daemon's clock, so
// the loop tests drive it with a fake one. It owns w; a burst runs on its
// own goroutine and reports back here before the loop hears of it. c is
// the check the watcher started with (rt.check belongs to the loop; a
// reload that changes it restarts the prober and so this watcher). rt is
// only handed back to the loop, which owns it; timeout is the next
// burst's timeout, which the loop sets after every round.
func (d *Daemon) runTrafficWatch(ctx context.Context, rt *uplinkRuntime, c policy.Check, gen int, spec probe.Spec, armed *atomic.Bool, timeout *atomic.Int64) {
	name := spec.Uplink
	w := newTrafficWatch(c.TrafficWindow, c.Interval, len(c.Targets))
	period := c.TrafficWindow / 2
	tick := make(chan struct{}, 1)
	arm := func() {
		d.clock.AfterFunc(period, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
	}
	type verdict struct {
		res probe.BurstResult
		err error
		why string
	}
	verdicts := make(chan verdict, 1)
	arm()
	for {
		select {
		case <-ctx.Done():
			return
		case v := <-verdicts:
			now := d.clock.Now()
			confirmed := v.err == nil && v.res.Answered == 0
			w.burstDone(confirmed, now)
			if v.err != nil {
				d.log.Warn("traffic trigger: burst failed to start", "event", "traffic", "uplink", name, "reason", v.err.Error())
				continue
			}
			d.log.Debug("traffic trigger: burst done", "event", "traffic", "uplink", name,
				"sent", v.res.Sent, "answered", v.res.Answered, "took", v.res.Took)
			if !confirmed {
				continue
			}
			m := trafficMsg{rt: rt, gen: gen, confirmed: true, at: now,
				reason: fmt.Sprintf("%s: %s; %d burst probes to %d targets unanswered", policy.ReasonTrafficConfirmed, v.why, v.res.Sent, len(c.Targets))}
			select {
			case d.traffic <- m:
			case <-ctx.Done():
				return
			}
			continue
		case <-tick:
		}
		arm()
		if !armed.Load() {
			w.samples = w.samples[:0]
			continue
		}
		tr, err := d.deps.Firewall.ReadTraffic(spec.Iface)
		if err != nil {
			d.log.Debug("traffic trigger: reading counters failed", "event", "traffic", "uplink", name, "reason", err.Error())
			continue
		}
		t, ok := tr[spec.Iface]
		if !ok {
			continue
		}
		why, burst := w.observe(trafficSample{at: d.clock.Now(), in: t.In.Packets, out: t.Out.Packets})
		if !burst {
			continue
		}
		bs := spec
		bs.Timeout = time.Duration(timeout.Load())
		d.log.Debug("traffic trigger: burst", "event", "traffic", "uplink", name, "why", why, "timeout", bs.Timeout)
		d.wg.Go(func() {
			res, err := d.deps.Burst(ctx, bs, burstCount, burstGap)
			verdicts <- verdict{res, err, why} // room for one: one burst at a time
		})
	}
}
