package daemon

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/kernel"
)

// TestLoopStaleBackoff: passes that keep finding the kernel changed under
// them (a device going away stays in the mirror until its RTM_DELLINK) are
// retried at once the first time, then with a doubling delay instead of
// back to back; a pass that gets through resets the delay.
func TestLoopStaleBackoff(t *testing.T) {
	verifyNoLeaks(t)
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
	stale := fmt.Errorf("ip route add default dev ppp0 table 200: %w", kernel.ErrStale)
	for range 4 {
		l.k.failNext(stale)
	}
	deleteRule(l, 300)
	for _, want := range []time.Duration{0, 250 * time.Microsecond, 500 * time.Microsecond, time.Millisecond} {
		if s := l.pass(); s.Err == nil {
			t.Fatal("the pass did not fail")
		}
		if got := l.clk.Pending(); !slices.Equal(got, []time.Duration{want}) {
			t.Fatalf("timers %v, want [%v]", got, want)
		}
		// Land exactly on the timer: a clock moved past it could be read
		// by the loop, which runs concurrently with Advance, at either
		// time, and the next timer would be off by the difference.
		if want > 0 {
			l.clk.Advance(want - 1)
			l.quiet()
			l.clk.Advance(1)
		} else {
			l.clk.Advance(0)
		}
	}
	if s := l.pass(); s.Err != nil || !restoresRule(s, 300) {
		t.Fatalf("after the stale passes: err %v changes %v", s.Err, s.Changes)
	}
	// Reset: the next stale pass is retried at once again. (Each of these
	// passes undid a deletion, a repair: let the repair budget refill.)
	l.clk.Advance(repairBurst * repairRefill)
	l.quiet()
	l.k.failNext(stale)
	deleteRule(l, 300)
	if s := l.pass(); s.Err == nil {
		t.Fatalf("the pass did not fail: %v", s.Changes)
	}
	if got := l.clk.Pending(); !slices.Equal(got, []time.Duration{0}) {
		t.Fatalf("timers %v after a successful pass, want [0]", got)
	}
}
