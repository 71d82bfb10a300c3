package policy

import (
	"strings"
	"testing"
	"time"
)

// hdriver runs a HealthMachine on a fake clock, the way the daemon does: it
// calls Tick whenever NextDeadline passes while time advances, and checks
// the machine's invariants after every call.
type hdriver struct {
	t      *testing.T
	h      *HealthMachine
	c      Check
	t0     time.Time
	now    time.Time
	events []Transition // every change, in order
	// lastStart is when the latest round played by probe started.
	lastStart time.Time
}

var healthEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newHealthDriver(t *testing.T, c Check) *hdriver {
	t.Helper()
	d := &hdriver{t: t, c: c, t0: healthEpoch, now: healthEpoch}
	d.h = NewHealthMachine(c, d.now)
	if s := d.h.State(); s != HealthChecking {
		t.Fatalf("initial state %s, want checking", s)
	}
	d.check(HealthChecking, Transition{})
	return d
}

// check verifies one call's result: a change starts where the machine was,
// ends where it is, and says why; Usable is exactly State == Up.
func (d *hdriver) check(before HealthState, tr Transition) {
	d.t.Helper()
	st := d.h.State()
	if d.h.Usable() != (st == HealthUp) {
		d.t.Fatalf("at %s: state %s but Usable() = %v", d.at(), st, d.h.Usable())
	}
	if !tr.Changed() {
		if st != before {
			d.t.Fatalf("at %s: state changed %s -> %s without a transition", d.at(), before, st)
		}
		return
	}
	if tr.From != before || tr.To != st || tr.Reason == "" {
		d.t.Fatalf("at %s: transition %+v, but the state went %s -> %s", d.at(), tr, before, st)
	}
	d.events = append(d.events, tr)
}

func (d *hdriver) at() time.Duration { return d.now.Sub(d.t0) }

// advance moves the clock by dt, ticking at every deadline on the way.
func (d *hdriver) advance(dt time.Duration) {
	d.t.Helper()
	end := d.now.Add(dt)
	for {
		dl := d.h.NextDeadline()
		if dl.IsZero() || dl.After(end) {
			break
		}
		if dl.Before(d.now) {
			d.t.Fatalf("at %s: deadline %s in the past", d.at(), dl.Sub(d.t0))
		}
		d.now = dl
		before := d.h.State()
		d.check(before, d.h.Tick(d.now))
	}
	d.now = end
}

func (d *hdriver) link(usable bool) Transition {
	d.t.Helper()
	before := d.h.State()
	tr := d.h.Link(usable, d.now)
	d.check(before, tr)
	return tr
}

// round reports a round with answered targets, each with rtt.
func (d *hdriver) round(answered int, rtt time.Duration) Transition {
	d.t.Helper()
	rtts := make([]time.Duration, answered)
	for i := range rtts {
		rtts[i] = rtt
	}
	before := d.h.State()
	tr := d.h.Round(answered, rtts, d.now)
	d.check(before, tr)
	return tr
}

// probe plays one prober round the way probe.Run reports it: the round
// starts one interval after the previous one; an answered round is
// reported after rtt, a lost one after the timeout.
func (d *hdriver) probe(answered int, rtt time.Duration) Transition {
	d.t.Helper()
	start := d.nextStart()
	d.advance(max(start.Sub(d.now), 0))
	d.lastStart = d.now
	report := rtt
	if answered < d.h.reliability {
		report = d.h.timeout
	}
	d.advance(report)
	return d.round(answered, rtt)
}

// nextStart is when the next prober round starts.
func (d *hdriver) nextStart() time.Time {
	if d.lastStart.IsZero() {
		return d.now
	}
	return d.lastStart.Add(d.h.interval)
}

func (d *hdriver) want(s HealthState) {
	d.t.Helper()
	if got := d.h.State(); got != s {
		d.t.Fatalf("at %s: state %s, want %s (events %v)", d.at(), got, s, d.events)
	}
}

func (d *hdriver) last() Transition {
	if len(d.events) == 0 {
		return Transition{}
	}
	return d.events[len(d.events)-1]
}

const hms = time.Millisecond

// checkDefaults is the loader's check with one target.
func checkDefaults() Check {
	return Check{Method: "icmp", Targets: []string{"192.0.2.1"},
		Interval: time.Second, Timeout: 800 * hms,
		Reliability: 1, Down: 3, Up: 3, HoldDown: 30 * time.Second, MaxLoss: 1}
}

func TestHealthStateString(t *testing.T) {
	for s, want := range map[HealthState]string{HealthDown: "down", HealthChecking: "checking", HealthUp: "up", HealthFailed: "failed", 9: "HealthState(9)"} {
		if s.String() != want {
			t.Errorf("%d: %q, want %q", int(s), s.String(), want)
		}
	}
	if (Transition{}).Changed() {
		t.Error("zero Transition reads as a change")
	}
}

func TestHealthStart(t *testing.T) {
	t.Run("first link up is assumed up", func(t *testing.T) {
		d := newHealthDriver(t, checkDefaults())
		if tr := d.link(true); tr.To != HealthUp || tr.Reason != "assumed up at start" {
			t.Fatalf("first Link(true) = %+v", tr)
		}
		if tr := d.link(true); tr.Changed() {
			t.Fatalf("repeated Link(true) = %+v, want no change", tr)
		}
	})
	t.Run("link down at start, then up", func(t *testing.T) {
		d := newHealthDriver(t, checkDefaults())
		d.link(false)
		d.want(HealthDown)
		d.advance(5 * time.Second)
		if tr := d.link(true); tr.To != HealthUp || tr.Reason != "assumed up at start" {
			t.Fatalf("first Link(true) = %+v", tr)
		}
	})
	t.Run("only the first time", func(t *testing.T) {
		d := newHealthDriver(t, checkDefaults())
		d.link(true)
		d.link(false)
		if tr := d.link(true); tr.To != HealthChecking {
			t.Fatalf("Link(true) after a link loss = %+v, want checking", tr)
		}
	})
	t.Run("failed before any link report", func(t *testing.T) {
		d := newHealthDriver(t, checkDefaults())
		for range 3 {
			d.probe(0, 0)
		}
		d.want(HealthFailed)
		if tr := d.link(true); tr.Changed() {
			t.Fatalf("Link(true) of a failed machine = %+v, want no change", tr)
		}
	})
	t.Run("probes before any link report", func(t *testing.T) {
		d := newHealthDriver(t, checkDefaults())
		d.probe(1, 10*hms)
		d.probe(1, 10*hms)
		d.want(HealthChecking)
		if tr := d.probe(1, 10*hms); tr.To != HealthUp || !strings.Contains(tr.Reason, "at start") {
			t.Fatalf("third good round at start = %+v, want up without hold-down", tr)
		}
	})
}

// TestHealthSilentFailure: a blackhole (link stays up, every probe lost) is
// declared after exactly down rounds, within interval × down of the first
// lost probe.
func TestHealthSilentFailure(t *testing.T) {
	cases := []struct {
		name   string
		mod    func(*Check)
		reason string
	}{
		{"defaults", func(*Check) {}, "3 probes lost in a row"},
		{"down 5", func(c *Check) { c.Down = 5 }, "5 probes lost in a row"},
		{"fast", func(c *Check) { c.Interval, c.Timeout, c.Down = 200*hms, 150*hms, 2 }, "2 probes lost in a row"},
		{"three targets", func(c *Check) {
			c.Targets = []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"}
		}, "3 rounds in a row with fewer than 1 of 3 targets answering (last: 0)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := checkDefaults()
			tc.mod(&c)
			d := newHealthDriver(t, c)
			d.link(true)
			for range 5 {
				d.probe(len(c.Targets), 20*hms)
			}
			d.want(HealthUp)
			firstLostSent := d.nextStart()
			for i := 1; i < c.Down; i++ {
				d.probe(0, 0)
				d.want(HealthUp)
			}
			tr := d.probe(0, 0)
			if tr.From != HealthUp || tr.To != HealthFailed || tr.Reason != tc.reason {
				t.Fatalf("round %d lost: %+v, want up -> failed %q", c.Down, tr, tc.reason)
			}
			if took, limit := d.now.Sub(firstLostSent), time.Duration(c.Down)*c.Interval; took > limit {
				t.Fatalf("declared %s after the first lost probe, want <= interval × down = %s", took, limit)
			}
			if d.h.NextDeadline() != (time.Time{}) {
				t.Fatalf("failed machine has a deadline")
			}
		})
	}
}

// TestHealthRecovery: a failed uplink takes traffic again only after up good
// rounds in a row plus hold_down without a failed round.
func TestHealthRecovery(t *testing.T) {
	failedDriver := func(t *testing.T, c Check) *hdriver {
		d := newHealthDriver(t, c)
		d.link(true)
		for range c.Down {
			d.probe(0, 0)
		}
		d.want(HealthFailed)
		return d
	}

	t.Run("up rounds then hold-down", func(t *testing.T) {
		c := checkDefaults()
		d := failedDriver(t, c)
		d.probe(1, 20*hms)
		d.probe(1, 20*hms)
		d.want(HealthFailed)
		tr := d.probe(1, 20*hms)
		if tr.To != HealthChecking || !strings.Contains(tr.Reason, "3 probe rounds answered in a row; 30s hold-down") {
			t.Fatalf("third good round: %+v", tr)
		}
		holdEnd := d.now.Add(30 * time.Second)
		if dl := d.h.NextDeadline(); dl.IsZero() || dl.After(holdEnd) {
			t.Fatalf("NextDeadline %s, want at most the hold-down end %s", dl.Sub(d.t0), holdEnd.Sub(d.t0))
		}
		for d.now.Add(time.Second).Before(holdEnd) {
			d.probe(1, 20*hms)
			d.want(HealthChecking)
		}
		d.advance(holdEnd.Sub(d.now) - time.Nanosecond)
		d.want(HealthChecking)
		d.advance(time.Nanosecond)
		d.want(HealthUp)
		if r := d.last().Reason; !strings.Contains(r, "no failure during 30s hold-down") {
			t.Fatalf("reason %q", r)
		}
	})

	t.Run("failure during hold-down restarts the count", func(t *testing.T) {
		c := checkDefaults()
		d := failedDriver(t, c)
		for range 3 {
			d.probe(1, 20*hms)
		}
		d.want(HealthChecking)
		for range 20 {
			d.probe(1, 20*hms)
		}
		d.probe(0, 0) // 23 s into the hold-down
		d.want(HealthChecking)
		// Two good rounds: not yet up rounds in a row, no hold-down.
		d.probe(1, 20*hms)
		d.probe(1, 20*hms)
		restart := d.probe(1, 20*hms)
		if restart.Changed() {
			t.Fatalf("third good round after the failure changed state: %+v", restart)
		}
		holdEnd := d.now.Add(30 * time.Second)
		for d.now.Add(time.Second).Before(holdEnd) {
			d.probe(1, 20*hms)
			d.want(HealthChecking)
		}
		d.advance(holdEnd.Sub(d.now))
		d.want(HealthUp)
	})

	t.Run("down failures during hold-down fail again", func(t *testing.T) {
		d := failedDriver(t, checkDefaults())
		for range 3 {
			d.probe(1, 20*hms)
		}
		d.want(HealthChecking)
		d.probe(0, 0)
		d.probe(0, 0)
		if tr := d.probe(0, 0); tr.To != HealthFailed {
			t.Fatalf("3 lost during hold-down: %+v", tr)
		}
	})

	t.Run("hold_down 0 fails back at once", func(t *testing.T) {
		c := checkDefaults()
		c.HoldDown = 0
		d := failedDriver(t, c)
		d.probe(1, 20*hms)
		d.probe(1, 20*hms)
		if tr := d.probe(1, 20*hms); tr.From != HealthFailed || tr.To != HealthUp {
			t.Fatalf("third good round with hold_down 0: %+v", tr)
		}
	})

	t.Run("link back", func(t *testing.T) {
		c := checkDefaults()
		d := newHealthDriver(t, c)
		d.link(true)
		d.link(false)
		if tr := d.link(true); !strings.Contains(tr.Reason, "waiting for 3 good probe rounds in a row and 30s hold-down") {
			t.Fatalf("link back: %+v", tr)
		}
		for range 3 {
			d.probe(1, 20*hms)
		}
		d.want(HealthChecking)
		upAt := d.now.Add(30 * time.Second)
		for range 40 {
			d.probe(1, 20*hms)
			if d.h.State() == HealthUp {
				break
			}
		}
		d.want(HealthUp)
		if tr := d.last(); tr.From != HealthChecking || d.now.Before(upAt) {
			t.Fatalf("up at %s (%+v), want at or after %s", d.at(), tr, upAt.Sub(d.t0))
		}
	})

	t.Run("late tick applies before the round", func(t *testing.T) {
		d := failedDriver(t, checkDefaults())
		for range 3 {
			d.probe(1, 20*hms)
		}
		// Rounds keep coming but nobody ticks at the hold-down's end; a
		// failed round arrives after it. The hold-down had passed without
		// failure: up first, and the failure is then one of down.
		end := d.now.Add(30 * time.Second)
		for d.now.Add(time.Second).Before(end) {
			d.now = d.now.Add(time.Second)
			before := d.h.State()
			d.check(before, d.h.Round(1, []time.Duration{20 * hms}, d.now))
			d.want(HealthChecking)
		}
		d.now = end.Add(500 * hms)
		before := d.h.State()
		tr := d.h.Round(0, nil, d.now)
		d.check(before, tr)
		if tr.From != HealthChecking || tr.To != HealthUp || d.h.State() != HealthUp {
			t.Fatalf("late round: %+v", tr)
		}
	})
}

// TestHealthFlapping: an uplink that flaps never takes traffic back while it
// flaps.
func TestHealthFlapping(t *testing.T) {
	t.Run("link toggles every second", func(t *testing.T) {
		for _, period := range []time.Duration{time.Second, 10 * time.Second} {
			d := newHealthDriver(t, checkDefaults())
			d.link(true) // assumed up at start
			end := d.now.Add(60 * time.Second)
			usable := true
			for d.now.Before(end) {
				usable = !usable
				d.link(usable)
				// While the link is up, the probes answer.
				for step := time.Duration(0); step < period; step += time.Second {
					d.advance(time.Second)
					if usable {
						d.round(1, 20*hms)
					}
					if d.h.Usable() {
						t.Fatalf("period %s: usable again at %s (events %v)", period, d.at(), d.events)
					}
				}
			}
		}
	})

	probesAlternate := func(t *testing.T, c Check) {
		d := newHealthDriver(t, c)
		d.link(true)
		for range c.Down {
			d.probe(0, 0)
		}
		d.want(HealthFailed)
		for i := range 60 {
			d.probe(i%2, 20*hms)
			if d.h.Usable() {
				t.Fatalf("usable again at %s (events %v)", d.at(), d.events)
			}
		}
	}
	t.Run("probes alternate", func(t *testing.T) { probesAlternate(t, checkDefaults()) })
	t.Run("probes alternate, up 1", func(t *testing.T) {
		c := checkDefaults()
		c.Up = 1
		probesAlternate(t, c)
	})
	t.Run("probes alternate, 3 good 1 bad", func(t *testing.T) {
		d := newHealthDriver(t, checkDefaults())
		d.link(true)
		for range 3 {
			d.probe(0, 0)
		}
		for i := range 60 {
			d.probe(min(i%4, 1), 20*hms)
			if d.h.Usable() {
				t.Fatalf("usable again at %s", d.at())
			}
		}
	})
}

func TestHealthReliability(t *testing.T) {
	c := checkDefaults()
	c.Targets = []string{"192.0.2.1", "198.51.100.1", "203.0.113.1"}
	c.Reliability = 2
	d := newHealthDriver(t, c)
	d.link(true)
	for range 10 {
		d.probe(2, 30*hms) // 2 of 3 suffice
	}
	d.want(HealthUp)
	d.probe(1, 30*hms)
	d.probe(1, 30*hms)
	d.want(HealthUp)
	tr := d.probe(1, 30*hms)
	if want := "3 rounds in a row with fewer than 2 of 3 targets answering (last: 1)"; tr.To != HealthFailed || tr.Reason != want {
		t.Fatalf("got %+v, want failed %q", tr, want)
	}
	loss, avg := d.h.Stats()
	// 10 rounds in the window: 7 with 2 of 3, 3 with 1 of 3 answering.
	if want := float64(7*1+3*2) / 30; loss < want-1e-9 || loss > want+1e-9 || avg != 30*hms {
		t.Fatalf("Stats = %v, %s; want %v, 30ms", loss, avg, want)
	}
}

func TestHealthMaxLoss(t *testing.T) {
	c := checkDefaults()
	c.Targets = []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}
	c.MaxLoss = 0.2
	d := newHealthDriver(t, c)
	d.link(true)
	for range 10 {
		d.probe(5, 20*hms)
	}
	// 1 of 5 lost per round: 20% is not above 20%.
	for range 10 {
		d.probe(4, 20*hms)
	}
	d.want(HealthUp)
	// 3 of 5 answer: reliability is met, but the window's loss (10
	// rounds of 5 probes) grows: 22%, 24%, 26%.
	d.probe(3, 20*hms)
	d.probe(3, 20*hms)
	d.want(HealthUp)
	tr := d.probe(3, 20*hms)
	if want := "loss 26% > 20%"; tr.To != HealthFailed || tr.Reason != want {
		t.Fatalf("got %+v, want failed %q", tr, want)
	}
	if loss, _ := d.h.Stats(); loss < 0.26-1e-9 || loss > 0.26+1e-9 {
		t.Fatalf("loss %v, want 0.26", loss)
	}
	// Full answers again: the rounds still fail (24%, 22%) until enough
	// lossy ones have left the window (20%); then up rounds and the
	// hold-down.
	var upAt time.Time
	for i := range 40 {
		d.probe(5, 20*hms)
		loss, _ := d.h.Stats()
		if i < 2 && loss <= 0.2 {
			t.Fatalf("round %d: loss %v already within max_loss", i, loss)
		}
		if i == 4 {
			d.want(HealthChecking) // rounds 2, 3, 4 were the good ones
			upAt = d.now.Add(30 * time.Second)
		}
		if d.h.Usable() && d.now.Before(upAt) {
			t.Fatalf("up at %s, before the hold-down ended", d.at())
		}
	}
	d.want(HealthUp)
}

func TestHealthMaxLatency(t *testing.T) {
	c := checkDefaults()
	c.MaxLatency = 500 * hms
	d := newHealthDriver(t, c)
	d.link(true)
	for range 10 {
		d.probe(1, 100*hms)
	}
	// A single slow answer is averaged away.
	d.probe(1, 900*hms)
	d.want(HealthUp)
	for range 2 {
		d.probe(1, 620*hms)
	}
	d.want(HealthUp)
	for i := 0; d.h.State() == HealthUp; i++ {
		if i == 10 {
			t.Fatal("never failed on latency")
		}
		d.probe(1, 620*hms)
	}
	if r := d.last().Reason; !strings.HasPrefix(r, "latency ") || !strings.HasSuffix(r, " > 500ms") {
		t.Fatalf("reason %q", r)
	}

	// The exact wording, from a window of 620ms answers only.
	d2 := newHealthDriver(t, c)
	d2.link(true)
	d2.probe(1, 620*hms)
	d2.probe(1, 620*hms)
	if tr := d2.probe(1, 620*hms); tr.To != HealthFailed || tr.Reason != "latency 620ms > 500ms" {
		t.Fatalf("got %+v", tr)
	}
	if _, avg := d2.h.Stats(); avg != 620*hms {
		t.Fatalf("avg %s", avg)
	}
}

func TestHealthLinkLoss(t *testing.T) {
	for _, from := range []HealthState{HealthUp, HealthChecking, HealthFailed} {
		t.Run(from.String(), func(t *testing.T) {
			d := newHealthDriver(t, checkDefaults())
			d.link(true)
			for range 4 {
				d.probe(1, 20*hms)
			}
			switch from {
			case HealthChecking:
				d.link(false)
				d.link(true)
			case HealthFailed:
				for range 3 {
					d.probe(0, 0)
				}
			}
			d.want(from)
			tr := d.link(false) // same instant: no probe round needed
			if tr.From != from || tr.To != HealthDown || !strings.Contains(tr.Reason, "link down") {
				t.Fatalf("link loss: %+v", tr)
			}
			if loss, avg := d.h.Stats(); loss != 0 || avg != 0 || !d.h.NextDeadline().IsZero() {
				t.Fatalf("down machine keeps stats (%v, %s) or a deadline", loss, avg)
			}
			// Rounds from the dead link change nothing.
			if tr := d.round(0, 0); tr.Changed() {
				t.Fatalf("round while down: %+v", tr)
			}
			if tr := d.link(false); tr.Changed() {
				t.Fatalf("repeated Link(false): %+v", tr)
			}
		})
	}
}

// TestHealthStuckProber: no rounds at all (a prober that died) is not
// health: the uplink fails after interval × down + timeout of silence.
func TestHealthStuckProber(t *testing.T) {
	d := newHealthDriver(t, checkDefaults())
	d.link(true)
	d.probe(1, 20*hms)
	last := d.now
	if dl := d.h.NextDeadline(); !dl.Equal(last.Add(3800 * hms)) {
		t.Fatalf("NextDeadline %s after the last round, want 3.8s", dl.Sub(last))
	}
	d.advance(10 * time.Second)
	d.want(HealthFailed)
	if r := d.last().Reason; r != "no probe results for 3.8s" {
		t.Fatalf("reason %q", r)
	}
}

func TestHealthDefaultsAndWindow(t *testing.T) {
	h := NewHealthMachine(Check{Targets: []string{"192.0.2.1"}}, healthEpoch)
	if h.interval != time.Second || h.timeout != 800*hms || h.reliability != 1 || h.down != 3 || h.up != 3 ||
		h.holdDown != 30*time.Second || h.maxLoss >= 0 || h.maxLatency != 0 || len(h.window) != 10 {
		t.Fatalf("defaults: %+v", h)
	}
	c := checkDefaults()
	c.Down, c.Up = 8, 7
	if h := NewHealthMachine(c, healthEpoch); len(h.window) != 15 {
		t.Fatalf("window %d, want down+up = 15", len(h.window))
	}
	// Only the last 10 rounds count.
	d := newHealthDriver(t, checkDefaults())
	d.link(true)
	d.round(0, 0)
	d.round(0, 0)
	for range 10 {
		d.round(1, 10*hms)
	}
	if loss, avg := d.h.Stats(); loss != 0 || avg != 10*hms {
		t.Fatalf("Stats = %v, %s after 10 good rounds", loss, avg)
	}
}

// TestHealthTrafficConfirmed: a confirmed traffic outage fails an Up
// uplink at once, is ignored while Down or already Failed, and recovery
// then takes the usual up rounds and hold-down.
func TestHealthTrafficConfirmed(t *testing.T) {
	c := Check{Targets: []string{"a", "b"}, Interval: time.Second, Timeout: 800 * time.Millisecond,
		Reliability: 1, Down: 3, Up: 2, HoldDown: 5 * time.Second, MaxLoss: 1}
	now := healthEpoch
	h := NewHealthMachine(c, now)
	if tr := h.TrafficConfirmed("traffic-confirmed: x", now); tr.Changed() && tr.To != HealthFailed {
		t.Fatalf("checking: %+v", tr)
	}
	h = NewHealthMachine(c, now)
	h.Link(true, now)
	if h.State() != HealthUp {
		t.Fatalf("state %s, want up", h.State())
	}
	now = now.Add(100 * time.Millisecond)
	tr := h.TrafficConfirmed("traffic-confirmed: 300 packets out, none in", now)
	if tr.From != HealthUp || tr.To != HealthFailed || !strings.HasPrefix(tr.Reason, "traffic-confirmed") {
		t.Fatalf("transition %+v, want up -> failed with the reason", tr)
	}
	if tr := h.TrafficConfirmed("traffic-confirmed: again", now); tr.Changed() {
		t.Errorf("already failed: %+v", tr)
	}
	// Recovery: up good rounds, then the hold-down.
	for i := range 2 {
		now = now.Add(time.Second)
		tr = h.Round(2, []time.Duration{time.Millisecond, time.Millisecond}, now)
		if i == 0 && tr.Changed() {
			t.Fatalf("changed after one good round: %+v", tr)
		}
	}
	if h.State() != HealthChecking {
		t.Fatalf("after up rounds: %s, want checking (hold-down)", h.State())
	}
	for range 5 {
		now = now.Add(time.Second)
		tr = h.Round(2, nil, now)
	}
	if tr.To != HealthUp {
		t.Fatalf("after hold-down: %+v, want up", tr)
	}
	h.Link(false, now)
	if tr := h.TrafficConfirmed("traffic-confirmed: down", now); tr.Changed() {
		t.Errorf("down: %+v", tr)
	}
}

// TestHealthRoundLost: retries keep a lossy one-target line's rounds good
// (the target answered), while the window's loss counts the rounds' first
// probes: each of them lost is 100 %, and max_loss judges that.
func TestHealthRoundLost(t *testing.T) {
	c := checkDefaults()
	c.MaxLoss = 0.4
	d := newHealthDriver(t, c)
	d.link(true)
	d.probe(1, 20*hms)
	d.want(HealthUp)
	for range 2 {
		d.now = d.now.Add(c.Interval)
		d.h.RoundLost(1, 1, []time.Duration{20 * hms}, d.now)
	}
	if loss, _ := d.h.Stats(); loss != 2.0/3 {
		t.Fatalf("loss %v after a good round and 2 answered by a retry, want 2/3", loss)
	}
	d.want(HealthUp) // 2 failed rounds: not yet down (3)
	d.now = d.now.Add(c.Interval)
	if tr := d.h.RoundLost(1, 1, []time.Duration{20 * hms}, d.now); tr.To != HealthFailed || tr.Reason != "loss 75% > 40%" {
		t.Fatalf("got %+v, want failed for loss 75%% > 40%%", tr)
	}
}
