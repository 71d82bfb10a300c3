package hooks

import (
	"slices"
	"sync"
	"time"
)

// Clock is the time source for scheduling (reconnect backoff). It exists so
// tests, here and in the daemon, can drive backoff with a [FakeClock] instead
// of sleeping for minutes.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine (real clock) or in the goroutine
	// that advances time (fake clock) once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call; it reports false if the call already happened
	// or is happening.
	Stop() bool
}

// RealClock returns the wall clock.
func RealClock() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc; *time.Timer already satisfies Timer.
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// FakeClock is a manually advanced Clock for tests. Timers fire only inside
// Advance, synchronously and in deadline order, which makes backoff tests
// deterministic. It is safe for concurrent use.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever the timer set changes
}

type fakeTimer struct {
	c    *FakeClock
	when time.Time
	seq  uint64 // ties fire in creation order, like a real timer wheel would
	f    func()
}

// NewFakeClock returns a FakeClock whose time starts at start (the zero time
// is replaced by a fixed date so Now never looks unset).
func NewFakeClock(start time.Time) *FakeClock {
	if start.IsZero() {
		start = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &FakeClock{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc registers f to run when the fake time reaches Now()+d.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	c.notifyLocked()
	return t
}

// Stop removes the timer if it has not fired yet.
func (t *fakeTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	c.notifyLocked()
	return true
}

func (c *FakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Advance moves the fake time forward by d and runs every timer that falls
// due, earliest first, in the calling goroutine. Timers created by those
// callbacks fire too if they fall inside the advanced window.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	for {
		i := c.earliestLocked()
		if i < 0 || c.timers[i].when.After(target) {
			break
		}
		t := c.timers[i]
		c.timers = slices.Delete(c.timers, i, i+1)
		if t.when.After(c.now) {
			c.now = t.when
		}
		c.notifyLocked()
		// The callback may take locks that are held while calling Now or
		// AfterFunc; never hold c.mu across it.
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	if target.After(c.now) {
		c.now = target
	}
	c.notifyLocked()
	c.mu.Unlock()
}

func (c *FakeClock) earliestLocked() int {
	best := -1
	for i, t := range c.timers {
		if best < 0 || t.when.Before(c.timers[best].when) ||
			(t.when.Equal(c.timers[best].when) && t.seq < c.timers[best].seq) {
			best = i
		}
	}
	return best
}

// Pending returns how long from now each pending timer will fire, earliest
// first.
func (c *FakeClock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]time.Duration, 0, len(c.timers))
	for _, t := range c.timers {
		out = append(out, t.when.Sub(c.now))
	}
	slices.Sort(out)
	return out
}

// WaitForTimers blocks, in real time, until at least n timers are pending or
// timeout passes, and reports whether they are. Code under test usually
// schedules from its own goroutines, so a test must wait for that before it
// advances the clock.
func (c *FakeClock) WaitForTimers(n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok, ch := len(c.timers) >= n, c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}
