package daemon

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/kernel"
)

// The scheduler alone, on the fake clock: what the loop tests see through
// whole passes, here one decision at a time.

func newTestScheduler() (*scheduler, *hooks.FakeClock) {
	clk := hooks.NewFakeClock(time.Time{})
	return newScheduler(clk), clk
}

// fired reads the scheduler's timer without blocking.
func fired(s *scheduler) (time.Time, bool) {
	select {
	case at := <-s.C():
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestSchedulerCoalesces(t *testing.T) {
	s, clk := newTestScheduler()
	defer s.stop()
	if _, ok := s.due(0); ok {
		t.Fatal("due with nothing wanted")
	}
	first := clk.Now()
	s.want(first)
	clk.Advance(time.Millisecond)
	s.want(clk.Now())
	trigger, ok := s.due(0)
	if !ok || !trigger.Equal(first) {
		t.Fatalf("due = %v, %v; want the first request's time %v", trigger, ok, first)
	}
	s.done(SyncResult{End: clk.Now()})
	if _, ok := s.due(0); ok {
		t.Fatal("still due after the pass")
	}
	if at := s.timer.armedAt(); !at.IsZero() {
		t.Fatalf("a successful pass armed the timer for %v", at)
	}
}

func TestSchedulerSpacing(t *testing.T) {
	const spacing = 100 * time.Millisecond
	s, clk := newTestScheduler()
	defer s.stop()
	s.want(clk.Now())
	if _, ok := s.due(spacing); !ok {
		t.Fatal("the first pass waits for min_sync_interval")
	}
	end := clk.Now()
	s.done(SyncResult{End: end})
	clk.Advance(10 * time.Millisecond)
	s.want(clk.Now())
	if _, ok := s.due(spacing); ok {
		t.Fatal("a pass 10 ms after the last one ran despite min_sync_interval")
	}
	if at := s.timer.armedAt(); !at.Equal(end.Add(spacing)) {
		t.Fatalf("timer armed for %v, want %v", at, end.Add(spacing))
	}
	clk.Advance(spacing)
	at, ok := fired(s)
	if !ok {
		t.Fatal("the spacing timer did not fire")
	}
	s.want(at)
	if _, ok := s.due(spacing); !ok {
		t.Fatal("not due once min_sync_interval passed")
	}
}

func TestSchedulerRetry(t *testing.T) {
	errBoom := errors.New("boom")
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration // -1: no timer
	}{
		{"success", nil, -1},
		{"error", errBoom, retryAfter},
		{"link not up", fmt.Errorf("route: %w", syscall.ENETDOWN), -1},
		{"link not up and another error", errors.Join(syscall.ENETDOWN, errBoom), retryAfter},
		{"stale", kernel.ErrStale, 0},
		{"deferred repair", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newTestScheduler()
			defer s.stop()
			s.want(clk.Now())
			s.due(0)
			s.done(SyncResult{End: clk.Now(), Err: tc.err, Deferred: tc.name == "deferred repair"})
			at := s.timer.armedAt()
			switch {
			case tc.want < 0 && !at.IsZero():
				t.Fatalf("timer armed for %v, want none", at)
			case tc.want >= 0 && !at.Equal(clk.Now().Add(tc.want)):
				if _, ok := fired(s); ok && tc.want == 0 {
					return // at once: it fired already
				}
				t.Fatalf("timer armed for %v, want now+%v", at, tc.want)
			}
		})
	}
}

func TestSchedulerStaleBackoff(t *testing.T) {
	s, clk := newTestScheduler()
	defer s.stop()
	want := []time.Duration{0, 250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond}
	for i, w := range want {
		s.want(clk.Now())
		if _, ok := s.due(0); !ok {
			t.Fatalf("stale pass %d not due", i)
		}
		s.done(SyncResult{End: clk.Now(), Err: kernel.ErrStale})
		clk.Advance(w)
		if _, ok := fired(s); !ok {
			t.Fatalf("after stale pass %d: no resync after %v", i+1, w)
		}
	}
	// A pass that is not stale ends the backoff: the next stale one
	// resyncs at once again.
	s.want(clk.Now())
	s.due(0)
	s.done(SyncResult{End: clk.Now()})
	s.want(clk.Now())
	s.due(0)
	s.done(SyncResult{End: clk.Now(), Err: kernel.ErrStale})
	clk.Advance(0)
	if _, ok := fired(s); !ok {
		t.Fatal("a stale pass after a good one did not resync at once")
	}
	for n, w := range map[int]time.Duration{20: retryAfter, 64: retryAfter} {
		if got := staleBackoff(n); got != w {
			t.Errorf("staleBackoff(%d) = %v, want %v", n, got, w)
		}
	}
}

func TestSchedulerRepairLimit(t *testing.T) {
	s, clk := newTestScheduler()
	defer s.stop()
	for i := range repairBurst {
		if !s.allowRepair(clk.Now()) {
			t.Fatalf("repair %d of the burst refused", i+1)
		}
	}
	if s.allowRepair(clk.Now()) {
		t.Fatal("a repair beyond the burst allowed")
	}
	if got, want := s.nextRepair(), clk.Now().Add(repairRefill); !got.Equal(want) {
		t.Fatalf("nextRepair = %v, want %v", got, want)
	}
	s.deferRepair()
	clk.Advance(repairRefill - time.Millisecond)
	if _, ok := fired(s); ok {
		t.Fatal("a deferred repair came before the limiter had a token")
	}
	clk.Advance(time.Millisecond)
	if _, ok := fired(s); !ok {
		t.Fatal("a deferred repair did not come when the limiter had a token")
	}
	if !s.allowRepair(clk.Now()) {
		t.Fatal("refill refused")
	}
}
