// Package backoff is uplinkd's one retry schedule: a delay that starts at
// Min and doubles after each failure up to Max, plus a jitter that never
// exceeds its cap. The watcher's resubscription, the reconnector's attempts,
// the publishers' retries and the loop's stale-pass resync all use it.
//
// It is a dozen lines on purpose: the well-kept library (cenkalti/backoff)
// is not in go.mod, and its jitter is applied after the cap (a retry may
// come later than the configured maximum), where uplinkd's
// reconnect_max_backoff promises the longest an uplink waits. Callers keep
// their own clocks and timers; this package only says how long.
package backoff

import "time"

// Backoff is a doubling delay from Min to Max. The zero state (after
// Reset) is Min. It is a value: copy it to keep a schedule.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration // the next delay; 0: Min
}

// New returns a Backoff at Min. Max below Min is raised to Min.
func New(minDelay, maxDelay time.Duration) Backoff {
	return Backoff{Min: minDelay, Max: max(minDelay, maxDelay)}
}

// Peek is the delay Next will return.
func (b *Backoff) Peek() time.Duration {
	if b.cur == 0 {
		return min(b.Min, b.Max)
	}
	return b.cur
}

// Next returns the current delay and doubles the one after it, up to Max.
func (b *Backoff) Next() time.Duration {
	d := b.Peek()
	b.cur = double(d, b.Max)
	return d
}

// Reset starts over at Min (after a success).
func (b *Backoff) Reset() { b.cur = 0 }

// Set makes d, clamped to [Min, Max], the next delay: a schedule carried
// over from another Backoff with different bounds (a config reload).
func (b *Backoff) Set(d time.Duration) { b.cur = min(max(d, b.Min), b.Max) }

// Delay is the delay after n consecutive failures counted by the caller
// (n = 0: Min), without state: Min doubled n times, capped at Max.
func (b Backoff) Delay(n int) time.Duration {
	d := min(b.Min, b.Max)
	for i := 0; i < n && d < b.Max; i++ {
		d = double(d, b.Max)
	}
	return d
}

// double is 2d capped at limit, without overflowing.
func double(d, limit time.Duration) time.Duration {
	if d > limit/2 {
		return limit
	}
	return 2 * d
}

// Jitter spreads d by ±frac using u, a uniform number in [0,1), and caps
// the result at limit: with limit = Max, the configured maximum really is
// the longest wait.
func Jitter(d, limit time.Duration, frac, u float64) time.Duration {
	f := 1 - frac + 2*frac*u
	return min(time.Duration(float64(d)*f), limit)
}
