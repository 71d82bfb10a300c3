package daemon

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// fakeProber hands the test the result channel of every prober the loop
// starts.
type fakeProber chan chan<- probe.Result

func (f fakeProber) run(ctx context.Context, _ probe.Spec, out chan<- probe.Result) error {
	select {
	case f <- out:
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}

const checkedPPP0 = `
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200
  [uplink.check]
  targets = ["192.0.2.1", "192.0.2.2"]

[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300
`

// TestLoopStatusFollowsProbeRounds: loss, rtt and jitter in the status are
// those of the last finished round, shown as the round ends, with no pass
// in between (none happens: the verdict does not change and the fake clock
// stands still).
func TestLoopStatusFollowsProbeRounds(t *testing.T) {
	verifyNoLeaks(t)
	prober := make(fakeProber, 1)
	l := startLoop(t, loopOpts{config: checkedPPP0, obs: twoPPP(), probe: prober.run})
	var out chan<- probe.Result
	select {
	case out = <-prober:
	case <-time.After(10 * time.Second):
		t.Fatal("no prober started for ppp0")
	}
	h := ctlHandler{l.d}
	status := func() control.Status {
		t.Helper()
		st, err := h.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := status()
	if u := before.Uplinks[0]; u.State != control.StateUp || u.Loss != nil || u.RTTms != nil || u.JitterMs != nil {
		t.Fatalf("before any round: %+v", u)
	}
	if u := before.Uplinks[1]; u.Loss != nil {
		t.Fatalf("an uplink without a check has a loss: %+v", u)
	}
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	round := func(n uint64, rtts ...float64) {
		t.Helper()
		for i, target := range []string{"192.0.2.1", "192.0.2.2"} {
			r := probe.Result{Uplink: "ppp0", Target: target, Round: n, At: l.clk.Now()}
			if rtts[i] >= 0 {
				r.OK, r.RTT = true, ms(rtts[i])
			} else {
				r.Err = "timeout after 800ms"
			}
			select {
			case out <- r:
			case <-time.After(5 * time.Second):
				t.Fatal("the loop does not take probe results")
			}
		}
	}
	n := uint64(0)
	near := func(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-6 }
	for _, tc := range []struct {
		name        string
		rtts        []float64 // -1: lost
		loss        float64
		rtt, jitter float64 // -1: absent
	}{
		{"both answer", []float64{10, 30}, 0, 20, 10},
		{"one target lost", []float64{-1, 22.5}, 0.5, 22.5, -1},
		{"both lost", []float64{-1, -1}, 1, -1, -1},
		{"both answer again", []float64{4, 6}, 0, 5, 1},
	} {
		n++
		round(n, tc.rtts...)
		var u control.Uplink
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			u = status().Uplinks[0]
			ok := near(u.Loss, tc.loss) &&
				(tc.rtt < 0 && u.RTTms == nil || near(u.RTTms, tc.rtt)) &&
				(tc.jitter < 0 && u.JitterMs == nil || near(u.JitterMs, tc.jitter))
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status loss %v rtt %v jitter %v, want %v %v %v", tc.name, fp(u.Loss), fp(u.RTTms), fp(u.JitterMs), tc.loss, tc.rtt, tc.jitter)
			}
		}
	}
	if st := status(); st.Daemon.Passes != before.Daemon.Passes {
		t.Errorf("passes %d → %d: the rounds were to show without a pass", before.Daemon.Passes, st.Daemon.Passes)
	}
}

func fp(p *float64) any {
	if p == nil {
		return "absent"
	}
	return *p
}
