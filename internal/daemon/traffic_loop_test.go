package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// fakeBurst reports every burst the loop starts and answers it with the
// next result the test hands it.
type fakeBurst struct {
	started chan probe.Spec
	results chan probe.BurstResult
}

func (f fakeBurst) run(ctx context.Context, s probe.Spec, count int, gap time.Duration) (probe.BurstResult, error) {
	if count != burstCount || gap != burstGap {
		return probe.BurstResult{}, nil
	}
	select {
	case f.started <- s:
	case <-ctx.Done():
		return probe.BurstResult{}, ctx.Err()
	}
	select {
	case r := <-f.results:
		return r, nil
	case <-ctx.Done():
		return probe.BurstResult{}, ctx.Err()
	}
}

func trafficConfig(trigger bool) string {
	on := "false"
	if trigger {
		on = "true"
	}
	return strings.Replace(checkedPPP0, `targets = ["192.0.2.1", "192.0.2.2"]`,
		`targets = ["192.0.2.1", "192.0.2.2"]
  interval = "10s"
  timeout = "1s"
  traffic_trigger = `+on, 1)
}

// TestLoopTrafficTrigger drives the traffic trigger on the fake clock and
// fake counters: idle and answered traffic start no burst; packets out with
// none in start one; an answered burst keeps the uplink up and quiets the
// trigger for an interval; an unanswered one fails the uplink at once with
// the reason traffic-confirmed.
func TestLoopTrafficTrigger(t *testing.T) {
	verifyNoLeaks(t)
	prober := make(fakeProber, 1)
	fb := fakeBurst{started: make(chan probe.Spec, 4), results: make(chan probe.BurstResult, 4)}
	l := startLoopWith(t, loopOpts{config: trafficConfig(true), obs: twoPPP(), probe: prober.run}, func(d *Deps) { d.Burst = fb.run })
	select {
	case <-prober:
	case <-time.After(10 * time.Second):
		t.Fatal("no prober started for ppp0")
	}
	var in, out uint64
	setCounters := func(dIn, dOut uint64) {
		in, out = in+dIn, out+dOut
		l.fw.mu.Lock()
		l.fw.traffic = map[string]firewall.Traffic{"ppp0": {In: firewall.Count{Packets: in}, Out: firewall.Count{Packets: out}}}
		l.fw.mu.Unlock()
	}
	reads := func() int { l.fw.mu.Lock(); defer l.fw.mu.Unlock(); return l.fw.reads }
	// sample advances the clock by half a window and waits until the
	// watcher has read the counters (which it does after re-arming its
	// timer, so the next sample cannot be missed).
	sample := func(dIn, dOut uint64) {
		t.Helper()
		setCounters(dIn, dOut)
		r := reads()
		for tries := 0; reads() == r; tries++ {
			if tries == 200 {
				t.Fatal("the traffic watcher does not read the counters")
			}
			l.clk.Advance(150 * time.Millisecond)
			for deadline := time.Now().Add(100 * time.Millisecond); reads() == r && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
	}
	noBurst := func(what string) {
		t.Helper()
		select {
		case s := <-fb.started:
			t.Fatalf("%s: a burst started: %+v", what, s)
		default:
		}
	}
	waitBurst := func(what string) probe.Spec {
		t.Helper()
		select {
		case s := <-fb.started:
			return s
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no burst", what)
		}
		return probe.Spec{}
	}

	setCounters(0, 0)
	for range 4 {
		sample(0, 0)
	}
	noBurst("idle")
	for range 4 {
		sample(100, 100)
	}
	noBurst("answered traffic")
	for range 2 {
		sample(0, 3) // a few packets, like one lost probe round
	}
	noBurst("a lost probe round on an idle uplink")

	// One-way: a burst starts; it is answered, the uplink stays up.
	for range 3 {
		sample(0, 100)
	}
	s := waitBurst("packets out, none in")
	if s.Iface != "ppp0" || len(s.Targets) != 2 {
		t.Errorf("burst spec %+v", s)
	}
	fb.results <- probe.BurstResult{Sent: 2, Answered: 1}
	for range 6 {
		sample(0, 100)
	}
	noBurst("within the hold-off after an answered burst")
	h := ctlHandler{l.d}
	st, _ := h.Status(context.Background())
	if u := st.Uplinks[0]; u.State != control.StateUp {
		t.Fatalf("after an answered burst: %s (%s)", u.State, u.Reason)
	}
	// After the hold-off (the interval, 10s), an unanswered burst fails it.
	sample(0, 100)
	l.clk.Advance(10 * time.Second)
	for range 3 {
		sample(0, 100)
	}
	waitBurst("after the hold-off")
	fb.results <- probe.BurstResult{Sent: 6}
	var u control.Uplink
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st, _ := h.Status(context.Background())
		if u = st.Uplinks[0]; u.State == control.StateFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uplink %s (%s), want failed", u.State, u.Reason)
		}
	}
	if !strings.HasPrefix(u.Reason, "traffic-confirmed: ") || !strings.Contains(u.Reason, "6 burst probes") {
		t.Errorf("reason %q", u.Reason)
	}
	if recs := l.logs.records(map[string]any{"event": "probe-down", "uplink": "ppp0"}); len(recs) != 1 ||
		!strings.HasPrefix(recs[0]["reason"].(string), "traffic-confirmed") {
		t.Errorf("journal: %v", recs)
	}
	// A failed uplink's counters are not read.
	r := reads()
	for range 4 {
		l.clk.Advance(150 * time.Millisecond)
	}
	if got := reads(); got != r {
		t.Errorf("counters read %d times while the uplink is failed", got-r)
	}
}

// TestLoopTrafficTriggerOff: without traffic_trigger no counters are read
// and no burst runs, however the counters move.
func TestLoopTrafficTriggerOff(t *testing.T) {
	verifyNoLeaks(t)
	prober := make(fakeProber, 1)
	fb := fakeBurst{started: make(chan probe.Spec, 4), results: make(chan probe.BurstResult, 4)}
	l := startLoopWith(t, loopOpts{config: trafficConfig(false), obs: twoPPP(), probe: prober.run}, func(d *Deps) { d.Burst = fb.run })
	select {
	case <-prober:
	case <-time.After(10 * time.Second):
		t.Fatal("no prober started for ppp0")
	}
	for i := range 20 {
		l.fw.mu.Lock()
		l.fw.traffic = map[string]firewall.Traffic{"ppp0": {Out: firewall.Count{Packets: uint64(100 * i)}}}
		l.fw.mu.Unlock()
		l.clk.Advance(150 * time.Millisecond)
	}
	l.fw.mu.Lock()
	reads := l.fw.reads
	l.fw.mu.Unlock()
	if reads != 0 {
		t.Errorf("counters read %d times with the trigger off", reads)
	}
	select {
	case s := <-fb.started:
		t.Errorf("burst with the trigger off: %+v", s)
	default:
	}
}
