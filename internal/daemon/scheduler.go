package daemon

import (
	"errors"
	"time"

	"golang.org/x/time/rate"

	"github.com/uplinkd/uplinkd/internal/backoff"
	"github.com/uplinkd/uplinkd/internal/kernel"
)

// Repairs are rate-limited: a burst for the admin's occasional `ip rule del`,
// then one per second, so uplinkd never fights another daemon in a tight loop.
const (
	repairBurst  = 5
	repairRefill = time.Second
	retryAfter   = time.Second
)

// scheduler decides when the reconcile loop runs a pass, in the role of
// kube-proxy's BoundedFrequencyRunner: requests coalesce into one pending
// pass (the first request's time is its trigger), passes are spaced by
// [daemon] min_sync_interval, a failed pass is retried (a stale one with a
// growing backoff), and repairs draw from one rate limit. It is owned by the
// loop's goroutine: Run tells it what asks for a pass (want) and each pass's
// result (done), and asks it whether a pass is due.
type scheduler struct {
	clock Clock
	// timer brings the next pass: a retry, a deferred repair or the end of
	// min_sync_interval.
	timer   *loopTimer
	repairs *rate.Limiter

	pending   bool
	trigger   time.Time // when the first request of the pending pass came
	lastSync  time.Time // when the last pass ended
	staleRuns int       // consecutive passes that found the kernel changed under them
}

func newScheduler(c Clock) *scheduler {
	return &scheduler{
		clock:   c,
		timer:   newLoopTimer(c),
		repairs: rate.NewLimiter(rate.Every(repairRefill), repairBurst),
	}
}

// C delivers the time of a scheduled pass; Run hands it to want.
func (s *scheduler) C() <-chan time.Time { return s.timer.C }

// stop disarms the timer (Run's exit).
func (s *scheduler) stop() { s.timer.stop() }

// want asks for a pass triggered at at. Requests while one is pending join
// it: the pass's trigger stays the first one's.
func (s *scheduler) want(at time.Time) {
	if !s.pending {
		s.pending, s.trigger = true, at
	}
}

// due reports whether a pass runs now, and its trigger. A pass wanted
// sooner than minInterval after the last one waits: the timer brings it.
func (s *scheduler) due(minInterval time.Duration) (trigger time.Time, ok bool) {
	if !s.pending {
		return time.Time{}, false
	}
	if at := s.lastSync.Add(minInterval); at.After(s.clock.Now()) {
		s.timer.resetAt(at)
		return time.Time{}, false
	}
	return s.trigger, true
}

// done takes the result of the pass due allowed and schedules what it
// needs next.
func (s *scheduler) done(res SyncResult) {
	s.lastSync = res.End
	s.pending, s.trigger = false, time.Time{}
	stale := errors.Is(res.Err, kernel.ErrStale)
	if !stale {
		s.staleRuns = 0
	}
	switch {
	case res.Deferred:
		s.deferRepair()
	case stale:
		// The snapshot is outdated: resync at once. A device that is
		// going away stays in the kernel mirror until its RTM_DELLINK,
		// which the kernel sends only once the device's references are
		// released (milliseconds later), and every pass until then fails
		// the same way: back off while that lasts, so the loop does not
		// spin through dozens of passes. The event itself still brings
		// the next pass at once.
		s.timer.resetAt(s.clock.Now().Add(staleBackoff(s.staleRuns)))
		s.staleRuns++
	case res.Err != nil && linkNotUp(res.Err):
		// No timer: the link's own link-up event brings the next pass.
	case res.Err != nil:
		s.timer.resetAt(s.clock.Now().Add(retryAfter))
	}
}

// allowRepair takes a token of the repair rate limit, if there is one.
func (s *scheduler) allowRepair(now time.Time) bool { return s.repairs.AllowN(now, 1) }

// deferRepair schedules a pass for when the repair limit has a token again.
func (s *scheduler) deferRepair() { s.timer.resetAt(s.nextRepair()) }

// nextRepair is when the repair limiter will have a token again.
func (s *scheduler) nextRepair() time.Time {
	now := s.clock.Now()
	tokens := s.repairs.TokensAt(now)
	if tokens >= 1 {
		return now
	}
	return now.Add(time.Duration((1 - tokens) * float64(repairRefill)))
}

// staleBackoff is how long to wait before resyncing after n consecutive
// stale passes: at once after the first, then 250 µs doubling up to
// retryAfter.
func staleBackoff(n int) time.Duration {
	if n == 0 {
		return 0
	}
	return backoff.New(250*time.Microsecond, retryAfter).Delay(n - 1)
}
