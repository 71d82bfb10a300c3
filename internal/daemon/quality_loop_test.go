package daemon

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// defaultWeights renders the fake kernel's default route in uplinkd's
// default table as dev:weight, sorted.
func (k *fakeKernel) defaultWeights(table int) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var hops []string
	for _, r := range k.obs.Routes {
		if r.Table == table && r.Protocol == policy.Protocol && r.Dst.Bits() == 0 {
			for _, nh := range r.Nexthops {
				hops = append(hops, fmt.Sprintf("%s:%d", nh.Dev, max(nh.Weight, 1)))
			}
		}
	}
	slices.Sort(hops)
	return strings.Join(hops, ",")
}

// TestLoopDegraded drives the degraded level through the real loop on fakes:
// rounds with loss above warn_loss degrade ppp0 after down rounds (status,
// one quality record, the default route's weights lowered), rounds within
// it make it good again only after a whole window, and the weights come
// back.
func TestLoopDegraded(t *testing.T) {
	verifyNoLeaks(t)
	prober := make(fakeProber, 1)
	cfg := strings.Replace(checkedPPP0, `targets = ["192.0.2.1", "192.0.2.2"]`,
		`targets = ["192.0.2.1", "192.0.2.2"]
  warn_loss = 0.2
  degraded_weight = 25`, 1)
	l := startLoop(t, loopOpts{config: cfg, obs: twoPPP(), probe: prober.run})
	var out chan<- probe.Result
	select {
	case out = <-prober:
	case <-time.After(10 * time.Second):
		t.Fatal("no prober started for ppp0")
	}
	table := l.d.cfg.Daemon.DefaultTable
	waitUntil(t, "both uplinks in the default route", func() bool { return l.k.defaultWeights(table) == "ppp0:1,ppp1:1" })
	h := ctlHandler{l.d}
	status := func() control.Uplink {
		t.Helper()
		st, err := h.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return st.Uplinks[0]
	}
	n := uint64(0)
	// round sends one round (one target lost when lossy) and waits until
	// the status shows it: its RTT is unique.
	round := func(lossy bool) control.Uplink {
		t.Helper()
		n++
		rtt := time.Duration(n) * time.Millisecond
		for i, target := range []string{"192.0.2.1", "192.0.2.2"} {
			r := probe.Result{Uplink: "ppp0", Target: target, Round: n, At: l.clk.Now()}
			if lossy && i == 0 {
				r.Err = "timeout after 800ms"
			} else {
				r.OK, r.RTT = true, rtt
			}
			select {
			case out <- r:
			case <-time.After(5 * time.Second):
				t.Fatal("the loop does not take probe results")
			}
		}
		var u control.Uplink
		waitUntil(t, fmt.Sprintf("round %d in the status", n), func() bool {
			u = status()
			return u.RTTms != nil && *u.RTTms == float64(n)
		})
		return u
	}
	// 50 % loss: the window is above 20 % from the first round; down = 3.
	for i := 1; i <= 2; i++ {
		if u := round(true); u.Degraded {
			t.Fatalf("degraded after %d bad rounds, want 3", i)
		}
	}
	if u := round(true); !u.Degraded || u.State != control.StateUp || !strings.Contains(u.QualityReason, "warn_loss 20%") {
		t.Fatalf("after 3 bad rounds: degraded %v state %s reason %q", u.Degraded, u.State, u.QualityReason)
	}
	// The window the level is judged on, in the status: rounds 1..3, one
	// answer each with RTTs 1, 2 and 3 ms.
	if w := status().Window; w == nil || w.Rounds != 3 || w.Loss != 0.5 || w.RTTms == nil || *w.RTTms != 2 ||
		w.JitterMs == nil || math.Abs(*w.JitterMs-0.816497) > 1e-3 {
		t.Fatalf("window %+v, want 3 rounds, loss 0.5, rtt 2ms, jitter 0.816ms", w)
	}
	waitUntil(t, "ppp0's weight lowered to 25% of ppp1's", func() bool { return l.k.defaultWeights(table) == "ppp0:25,ppp1:100" })
	if recs := l.logs.records(map[string]any{"event": "quality", "uplink": "ppp0", "level": "degraded"}); len(recs) != 1 {
		t.Fatalf("%d degraded records, want 1", len(recs))
	}
	// Good rounds: 3 lost of 2×(3+k) probes is ≤ 20 % from k = 5; then 10
	// (the window) good judgements in a row → good at k = 14.
	for k := 1; k <= 13; k++ {
		if u := round(false); !u.Degraded {
			t.Fatalf("good again after %d good rounds, want 14", k)
		}
	}
	if u := round(false); u.Degraded || !strings.Contains(u.QualityReason, "within the warnings") {
		t.Fatalf("after 14 good rounds: degraded %v reason %q", u.Degraded, u.QualityReason)
	}
	waitUntil(t, "weights restored", func() bool { return l.k.defaultWeights(table) == "ppp0:1,ppp1:1" })
	if recs := l.logs.records(map[string]any{"event": "quality", "uplink": "ppp0", "level": "good"}); len(recs) != 1 {
		t.Fatalf("%d good records, want 1", len(recs))
	}
}
