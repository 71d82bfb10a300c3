package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// degradedConfig is two balanced ppp uplinks (weights 2 and 1) whose checks
// can degrade them, ppp0 with action a0 and ppp1 with a1, and a tier-2
// backup without a check.
func degradedConfig(t testing.TB, a0, a1 string) *Config {
	t.Helper()
	check := func(action string) string {
		s := "[uplink.check]\ntargets = [\"192.0.2.1\"]\nwarn_loss = 0.1\ndegraded = \"" + action + "\"\n"
		if action == "lower-weight" {
			s += "degraded_weight = 25\n"
		}
		return s
	}
	return mustParse(t, `
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
weight = 2
`+check(a0)+`
[[uplink]]
name = "ppp1"
table = 201
rule_priority = 300
`+check(a1)+`
[[uplink]]
name = "ppp2"
table = 202
rule_priority = 400
tier = 2
`)
}

// defaultHops renders the default route's next hops as dev:weight, in
// order ("" when there is no default route).
func defaultHops(cfg *Config, d Desired) string {
	var hops []string
	for _, r := range d.Routes {
		if r.Table == cfg.Daemon.DefaultTable && r.Dst.Bits() == 0 {
			for _, nh := range r.Nexthops {
				hops = append(hops, fmt.Sprintf("%s:%d", nh.Dev, nh.Weight))
			}
		}
	}
	return strings.Join(hops, ",")
}

// TestComputeDegraded: the degraded set is an input of the pure compute. A
// degraded uplink with "lower-weight" keeps degraded_weight percent of its
// share; with "leave" it leaves the route while a healthy uplink exists in
// any tier; a nil set changes nothing.
func TestComputeDegraded(t *testing.T) {
	three := Observed{
		Links: map[string]Link{"ppp0": p2pLink("ppp0", 5, true), "ppp1": p2pLink("ppp1", 6, true), "ppp2": p2pLink("ppp2", 7, true)},
		Addrs: map[string][]Addr{
			"ppp0": p2pAddr("100.64.0.10", "100.64.0.1"),
			"ppp1": p2pAddr("100.64.1.10", "100.64.1.1"),
			"ppp2": p2pAddr("100.64.2.10", "100.64.2.1"),
		},
	}
	lw, lv := "lower-weight", "leave"
	tests := []struct {
		name     string
		a0, a1   string
		health   Health
		drained  Drained
		degraded Degraded
		want     string
	}{
		{"none degraded: configured weights", lw, lw, nil, nil, nil, "ppp0:2,ppp1:1"},
		{"false entries degrade nothing", lw, lw, nil, nil, Degraded{"ppp0": false}, "ppp0:2,ppp1:1"},
		{"ppp0 lower-weight: 2×25% of ppp1's 1", lw, lw, nil, nil, Degraded{"ppp0": true}, "ppp0:50,ppp1:100"},
		{"ppp1 lower-weight", lw, lw, nil, nil, Degraded{"ppp1": true}, "ppp0:200,ppp1:25"},
		{"both degraded: shares as configured", lw, lw, nil, nil, Degraded{"ppp0": true, "ppp1": true}, "ppp0:2,ppp1:1"},
		{"ppp0 leaves, ppp1 carries", lv, lw, nil, nil, Degraded{"ppp0": true}, "ppp1:1"},
		{"both leave: tier 2 carries", lv, lv, nil, nil, Degraded{"ppp0": true, "ppp1": true}, "ppp2:1"},
		{"leave but nothing healthy: degraded beats nothing", lv, lv, Health{}, Drained{"ppp2": true}, Degraded{"ppp0": true, "ppp1": true}, "ppp0:2,ppp1:1"},
		{"leave and the other failed: stays", lv, lw, Health{"ppp1": false}, Drained{"ppp2": true}, Degraded{"ppp0": true}, "ppp0:2"},
		{"a failed uplink is not degraded", lw, lw, Health{"ppp0": false}, nil, Degraded{"ppp0": true}, "ppp1:1"},
		{"degraded and drained: drained wins", lw, lw, nil, Drained{"ppp0": true}, Degraded{"ppp0": true}, "ppp1:1"},
		{"uplink without check ignores the set", lw, lw, nil, Drained{"ppp0": true, "ppp1": true}, Degraded{"ppp2": true}, "ppp2:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := degradedConfig(t, tt.a0, tt.a1)
			links := LinkStates(cfg, three)
			d := ComputeWith(cfg, three, links, tt.health, tt.drained, tt.degraded)
			if got := defaultHops(cfg, d); got != tt.want {
				t.Errorf("default route %q, want %q", got, tt.want)
			}
			for _, st := range d.Uplinks {
				u := cfg.UplinkByName(st.Name)
				want := tt.degraded[st.Name] && st.Usable && u.Check.Warns()
				if st.Degraded != want {
					t.Errorf("%s: Degraded %v, want %v", st.Name, st.Degraded, want)
				}
			}
			// Without the degraded set, ComputeWith is ComputeFrom.
			if tt.degraded == nil {
				if a, b := defaultHops(cfg, ComputeFrom(cfg, three, links, tt.health, tt.drained)), tt.want; a != b {
					t.Errorf("ComputeFrom %q, ComputeWith %q", a, b)
				}
			}
		})
	}
}

// TestLowerDegradedWeightsRange: whatever the weights and percent, every
// next hop's weight stays within the kernel's 1..256 and a degraded one
// never gets more than its healthy share.
func TestLowerDegradedWeightsRange(t *testing.T) {
	for _, w0 := range []int{1, 2, 100, 255, 256} {
		for _, w1 := range []int{1, 7, 256} {
			for _, pct := range []int{1, 25, 50, 99} {
				cfg := &Config{Uplinks: []Uplink{
					{Name: "a", Weight: w0, Check: &Check{Interval: time.Second, WarnLoss: 0.1, Degraded: DegradedLowerWeight, DegradedWeight: pct}},
					{Name: "b", Weight: w1},
				}}
				states := []UplinkState{{Name: "a", Degraded: true}, {Name: "b"}}
				hops := []Nexthop{{Weight: w0}, {Weight: w1}}
				lowerDegradedWeights(cfg, states, []int{0, 1}, hops)
				for _, h := range hops {
					if h.Weight < 1 || h.Weight > MaxNexthopWeight {
						t.Errorf("w0=%d w1=%d pct=%d: weight %d out of 1..256", w0, w1, pct, h.Weight)
					}
				}
				// a's share relative to b's must not grow.
				if hops[0].Weight*w1 > w0*hops[1].Weight {
					t.Errorf("w0=%d w1=%d pct=%d: degraded share grew: %d:%d", w0, w1, pct, hops[0].Weight, hops[1].Weight)
				}
			}
		}
	}
}

// TestHealthDegraded drives the quality level: degraded after down bad
// rounds in a row (window loss above warn_loss or latency above
// warn_latency), good again only after a whole window of good rounds, never
// while not up, and never without a warning configured.
func TestHealthDegraded(t *testing.T) {
	t0 := time.Unix(1000, 0)
	base := Check{Targets: []string{"192.0.2.1"}, Interval: time.Second, Timeout: 800 * time.Millisecond,
		Reliability: 1, Down: 3, Up: 3, MaxLoss: 1, WarnLoss: 1}
	ms := func(n int) []time.Duration { return []time.Duration{time.Duration(n) * time.Millisecond} }
	// run feeds rounds (nil rtts: lost) from round 1 and returns the
	// machine and, per round, whether it was degraded after it.
	run := func(c Check, rounds [][]time.Duration) (*HealthMachine, []bool) {
		h := NewHealthMachine(c, t0)
		h.Link(true, t0)
		var deg []bool
		for i, r := range rounds {
			h.Round(len(r), r, t0.Add(time.Duration(i+1)*time.Second))
			deg = append(deg, h.Degraded())
		}
		return h, deg
	}
	first := func(deg []bool, v bool, from int) int {
		for i := from; i < len(deg); i++ {
			if deg[i] == v {
				return i + 1 // round number
			}
		}
		return -1
	}

	t.Run("loss: in after down rounds, out after a window of good ones", func(t *testing.T) {
		c := base
		c.WarnLoss = 0.05
		var rounds [][]time.Duration
		for i := 1; i <= 40; i++ {
			if i == 6 {
				rounds = append(rounds, nil)
			} else {
				rounds = append(rounds, ms(10))
			}
		}
		h, deg := run(c, rounds)
		// Round 6 is lost: rounds 6, 7, 8 are above 5 % → degraded at 8.
		if got := first(deg, true, 0); got != 8 {
			t.Fatalf("degraded at round %d, want 8 (%v)", got, deg)
		}
		// Round 6 leaves the 10-round window at round 16; ten good
		// rounds in a row from there → good at round 25.
		if got := first(deg, false, 7); got != 25 {
			t.Fatalf("good again at round %d, want 25 (%v)", got, deg)
		}
		if !h.Usable() || !strings.Contains(h.DegradedReason(), "within the warnings") {
			t.Errorf("usable %v, reason %q", h.Usable(), h.DegradedReason())
		}
	})
	t.Run("latency", func(t *testing.T) {
		c := base
		c.WarnLatency = 100 * time.Millisecond
		var rounds [][]time.Duration
		for range 5 {
			rounds = append(rounds, ms(20))
		}
		for range 20 {
			rounds = append(rounds, ms(400)) // bufferbloat: slow, never lost
		}
		h, deg := run(c, rounds)
		// The window average passes 100ms at round 7 (900ms/7 ≈ 129ms;
		// round 6: 500ms/6 ≈ 83ms): rounds 7, 8, 9 → degraded at 9.
		if got := first(deg, true, 0); got != 9 {
			t.Fatalf("degraded at round %d, want 9 (%v)", got, deg)
		}
		if !h.Usable() || !strings.HasPrefix(h.DegradedReason(), "latency") {
			t.Errorf("usable %v, reason %q", h.Usable(), h.DegradedReason())
		}
		if j, ok := h.Jitter(); !ok || j != 0 {
			t.Errorf("jitter over a window of equal RTTs = %v %v, want 0", j, ok)
		}
	})
	t.Run("no warnings: never degraded", func(t *testing.T) {
		var rounds [][]time.Duration
		for i := range 20 {
			if i%2 == 0 {
				rounds = append(rounds, nil) // 50 % loss, never 3 in a row
			} else {
				rounds = append(rounds, ms(900))
			}
		}
		h, deg := run(base, rounds)
		if got := first(deg, true, 0); got != -1 || !h.Usable() {
			t.Fatalf("degraded at round %d, usable %v", got, h.Usable())
		}
	})
	t.Run("failed and link down leave the degraded level", func(t *testing.T) {
		c := base
		c.WarnLoss = 0.05
		h, deg := run(c, [][]time.Duration{ms(10), nil, ms(10), ms(10)})
		if !deg[3] {
			t.Fatalf("not degraded: %v", deg)
		}
		for i := range 3 {
			h.Round(0, nil, t0.Add(time.Duration(10+i)*time.Second))
		}
		if h.State() != HealthFailed || h.Degraded() {
			t.Fatalf("state %v degraded %v, want failed and not degraded", h.State(), h.Degraded())
		}
		h, _ = run(c, [][]time.Duration{ms(10), nil, ms(10), ms(10)})
		h.Link(false, t0.Add(20*time.Second))
		if h.Degraded() {
			t.Fatal("degraded after link down")
		}
	})
	t.Run("jitter across rounds", func(t *testing.T) {
		h, _ := run(base, [][]time.Duration{ms(10), ms(30), ms(10), ms(30)})
		if j, ok := h.Jitter(); !ok || j != 10*time.Millisecond {
			t.Errorf("jitter %v %v, want 10ms", j, ok)
		}
	})
}
