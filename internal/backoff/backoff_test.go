package backoff

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name     string
		min, max time.Duration
		want     []time.Duration // successive Next results
	}{
		{"watcher: 10ms doubling to 1s", 10 * ms, time.Second,
			[]time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second}},
		{"reconnect defaults: 5s doubling to 5m", 5 * time.Second, 5 * time.Minute,
			[]time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}},
		{"max not a power-of-two multiple: capped exactly", 3 * ms, 10 * ms,
			[]time.Duration{3 * ms, 6 * ms, 10 * ms, 10 * ms}},
		{"max below min is raised to min", 7 * ms, ms,
			[]time.Duration{7 * ms, 7 * ms}},
		{"huge max: doubling never overflows", time.Duration(1) << 61, time.Duration(1<<63 - 1),
			[]time.Duration{1 << 61, 1 << 62, 1<<63 - 1, 1<<63 - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.min, tt.max)
			for i, want := range tt.want {
				if p := b.Peek(); p != want {
					t.Fatalf("Peek before Next #%d = %v, want %v", i, p, want)
				}
				if got := b.Next(); got != want {
					t.Fatalf("Next #%d = %v, want %v", i, got, want)
				}
			}
			b.Reset()
			if got := b.Next(); got != tt.want[0] {
				t.Fatalf("Next after Reset = %v, want %v", got, tt.want[0])
			}
		})
	}
}

// TestMatchesOldSchedules: each former hand-written backoff, as it was
// written, against its replacement, so that none changed behaviour.
func TestMatchesOldSchedules(t *testing.T) {
	// watcher.go: backoff = min(2*backoff, maxBackoff) from minBackoff.
	w := New(10*time.Millisecond, time.Second)
	old := 10 * time.Millisecond
	for i := range 40 {
		if got := w.Next(); got != old {
			t.Fatalf("watcher step %d: %v, old %v", i, got, old)
		}
		old = min(2*old, time.Second)
	}
	// reconnect.go: the same doubling from spec.Backoff to spec.MaxBackoff.
	r := New(5*time.Second, 5*time.Minute)
	old = 5 * time.Second
	for i := range 40 {
		if got := r.Next(); got != old {
			t.Fatalf("reconnect step %d: %v, old %v", i, got, old)
		}
		old = min(2*old, 5*time.Minute)
	}
	// daemon.go staleBackoff: min(250µs<<min(n-1, 12), retryAfter) for n > 0.
	s := New(250*time.Microsecond, time.Second)
	for n := 1; n < 100; n++ {
		if got, old := s.Delay(n-1), min(250*time.Microsecond<<min(n-1, 12), time.Second); got != old {
			t.Fatalf("stale n=%d: %v, old %v", n, got, old)
		}
	}
	// publish/manager.go: Backoff << min(failures-1, 16), capped.
	p := New(30*time.Second, 30*time.Minute)
	for f := 1; f < 100; f++ {
		if got, old := p.Delay(f-1), min(30*time.Second<<min(f-1, 16), 30*time.Minute); got != old {
			t.Fatalf("publish failures=%d: %v, old %v", f, got, old)
		}
	}
}

func TestSet(t *testing.T) {
	tests := []struct {
		name string
		set  time.Duration
		want []time.Duration
	}{
		{"inside the bounds: kept, then doubled", 3 * time.Second, []time.Duration{3 * time.Second, 6 * time.Second}},
		{"below Min: Min", time.Millisecond, []time.Duration{2 * time.Second, 4 * time.Second}},
		{"above Max: Max", time.Hour, []time.Duration{10 * time.Second, 10 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(2*time.Second, 10*time.Second)
			b.Set(tt.set)
			for i, want := range tt.want {
				if got := b.Next(); got != want {
					t.Fatalf("Next #%d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestDelay(t *testing.T) {
	b := New(time.Second, 10*time.Second)
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	if got := b.Delay(1 << 30); got != 10*time.Second {
		t.Errorf("Delay(huge) = %v, want Max", got)
	}
}

func TestJitter(t *testing.T) {
	tests := []struct {
		name     string
		d, limit time.Duration
		u        float64
		want     time.Duration
	}{
		{"u=0: d-20%", 10 * time.Second, time.Hour, 0, 8 * time.Second},
		{"u=0.5: d", 10 * time.Second, time.Hour, 0.5, 10 * time.Second},
		{"u near 1: d+20%", 10 * time.Second, time.Hour, 0.999999, 11999996 * time.Microsecond},
		{"capped at limit", 10 * time.Second, 11 * time.Second, 0.99, 11 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Jitter(tt.d, tt.limit, 0.2, tt.u); got != tt.want {
				t.Fatalf("Jitter = %v, want %v", got, tt.want)
			}
		})
	}
}
