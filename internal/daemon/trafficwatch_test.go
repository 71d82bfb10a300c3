package daemon

import (
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/policy"
)

// TestTrafficWatch: the trigger's pure logic on fake times and counters.
func TestTrafficWatch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const win, half = 300 * time.Millisecond, 150 * time.Millisecond
	type step struct {
		dt        time.Duration // since the previous sample
		dIn, dOut uint64
		burst     bool
		done      *bool // end the running burst before this sample: confirmed?
	}
	yes, no := true, false
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"idle", []step{{0, 0, 0, false, nil}, {half, 0, 0, false, nil}, {half, 0, 0, false, nil}, {half, 0, 0, false, nil}}},
		{"answered traffic", []step{{0, 0, 0, false, nil}, {half, 50, 50, false, nil}, {half, 50, 50, false, nil}, {half, 1, 50, false, nil}}},
		// 12 = 8 + 2×2 targets is the least that counts.
		{"few packets", []step{{0, 0, 0, false, nil}, {half, 0, 5, false, nil}, {half, 0, 6, false, nil}, {half, 0, 5, false, nil}}},
		{"silence needs a whole window", []step{{0, 0, 0, false, nil}, {half, 0, 100, false, nil}, {half, 0, 100, true, nil}}},
		{"one burst at a time", []step{{0, 0, 0, false, nil}, {half, 0, 100, false, nil}, {half, 0, 100, true, nil}, {half, 0, 100, false, nil}, {half, 0, 100, false, nil}}},
		{"an answer within the window clears", []step{{0, 0, 0, false, nil}, {half, 1, 100, false, nil}, {half, 0, 100, false, nil}, {half, 0, 100, true, nil}}},
		{"counter restart", []step{{0, 500, 500, false, nil}, {half, 0, 0, false, nil}, {half, 0, 0, false, nil}}},
		{"answered burst quiets for the hold-off", []step{
			{0, 0, 0, false, nil}, {half, 0, 100, false, nil}, {half, 0, 100, true, nil},
			{half, 0, 100, false, &no}, {half, 0, 100, false, nil}, {half, 0, 100, false, nil},
			{half, 0, 100, false, nil}, {half, 0, 100, false, nil}, {half, 0, 100, false, nil},
			{half, 0, 100, false, nil}, {half, 0, 100, true, nil}}}, // 1.5s: the hold-off (1s) ended at 1.45s
		{"confirmed burst: the next silence bursts again", []step{
			{0, 0, 0, false, nil}, {half, 0, 100, false, nil}, {half, 0, 100, true, nil},
			{half, 0, 100, true, &yes}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTrafficWatch(win, time.Second, 2)
			now := t0
			var in, out uint64 = 1000, 1000
			for i, s := range tc.steps {
				now = now.Add(s.dt)
				if tc.name == "counter restart" && i == 1 {
					in, out = 0, 0 // the chains were rewritten
				}
				in, out = in+s.dIn, out+s.dOut
				if s.done != nil {
					w.burstDone(*s.done, now)
				}
				why, burst := w.observe(trafficSample{at: now, in: in, out: out})
				if burst != s.burst {
					t.Fatalf("step %d: burst %v (%q), want %v", i, burst, why, s.burst)
				}
				if burst && why == "" {
					t.Errorf("step %d: a burst without a reason", i)
				}
			}
		})
	}
}

// TestBurstTimeoutFor: a burst waits 4× the slowest RTT of the last 5
// rounds when every probe of them answered, within 200ms..timeout; a lost
// probe among them, or fewer rounds, gives the check's timeout.
func TestBurstTimeoutFor(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	c := policy.Check{Targets: []string{"192.0.2.1", "192.0.2.2"}, Interval: time.Second, Timeout: ms(800),
		Reliability: 1, Down: 3, Up: 3, MaxLoss: 1, WarnLoss: 1}
	tests := []struct {
		name   string
		rounds [][]time.Duration // each round's answers (2 targets)
		want   time.Duration
	}{
		{"no rounds yet", nil, ms(800)},
		{"4 clean rounds: too few", [][]time.Duration{{ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}}, ms(800)},
		{"5 clean fast rounds: the floor", [][]time.Duration{{ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}}, ms(200)},
		{"slowest 90ms: 360ms", [][]time.Duration{{ms(10), ms(12)}, {ms(10), ms(90)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}}, ms(360)},
		{"slowest 300ms: capped at the timeout", [][]time.Duration{{ms(10), ms(12)}, {ms(10), ms(300)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}}, ms(800)},
		{"a lost probe in the last 5: the timeout", [][]time.Duration{{ms(10), ms(12)}, {ms(10)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}}, ms(800)},
		{"a lost probe 6 rounds ago: clean", [][]time.Duration{{ms(10)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}, {ms(10), ms(12)}}, ms(200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := policy.NewHealthMachine(c, t0)
			h.Link(true, t0)
			for i, r := range tt.rounds {
				h.Round(len(r), r, t0.Add(time.Duration(i+1)*time.Second))
			}
			if got := burstTimeoutFor(h, c.Timeout); got != tt.want {
				t.Errorf("burst timeout %v, want %v", got, tt.want)
			}
		})
	}
	if got := burstTimeoutFor(nil, ms(800)); got != ms(800) {
		t.Errorf("without a health machine: %v", got)
	}
}
