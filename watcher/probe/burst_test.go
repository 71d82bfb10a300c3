package probe

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeProber answers the probes answer says to; the others wait for their
// timeout (or the burst's cancellation), like a lost probe.
type fakeProber struct {
	mu     sync.Mutex
	calls  map[string]int
	answer func(target string, n int) bool
}

func (f *fakeProber) probe(ctx context.Context, t *target, timeout time.Duration) (time.Duration, error) {
	f.mu.Lock()
	n := f.calls[t.raw]
	f.calls[t.raw]++
	f.mu.Unlock()
	if f.answer(t.raw, n) {
		return time.Millisecond, nil
	}
	select {
	case <-time.After(timeout):
		return 0, errTimeout(timeout)
	case <-ctx.Done():
		return 0, errors.New("cancelled")
	}
}

func (f *fakeProber) close() error { return nil }

func burstTargets(names ...string) []*target {
	var out []*target
	for _, n := range names {
		out = append(out, &target{raw: n})
	}
	return out
}

func TestBurst(t *testing.T) {
	ts := burstTargets("a", "b")
	t.Run("all lost", func(t *testing.T) {
		f := &fakeProber{calls: map[string]int{}, answer: func(string, int) bool { return false }}
		r := burst(context.Background(), f, ts, 3, 10*time.Millisecond, 50*time.Millisecond)
		if r.Sent != 6 || r.Answered != 0 {
			t.Errorf("got %+v, want 6 sent, 0 answered", r)
		}
		if f.calls["a"] != 3 || f.calls["b"] != 3 {
			t.Errorf("probes per target %v, want 3 each", f.calls)
		}
		// The verdict waits for the last probe's timeout.
		if r.Took < 70*time.Millisecond {
			t.Errorf("took %s, less than 2 gaps + timeout", r.Took)
		}
	})
	t.Run("one answer clears", func(t *testing.T) {
		// Only b's second probe is answered: the burst stops sending.
		f := &fakeProber{calls: map[string]int{}, answer: func(tg string, n int) bool { return tg == "b" && n == 1 }}
		r := burst(context.Background(), f, ts, 3, 200*time.Millisecond, 5*time.Second)
		if r.Answered != 1 || r.Sent != 4 {
			t.Errorf("got %+v, want 4 sent, 1 answered", r)
		}
		if r.Took >= 5*time.Second {
			t.Errorf("took %s: waited for the timeout despite an answer", r.Took)
		}
	})
	t.Run("first answer", func(t *testing.T) {
		f := &fakeProber{calls: map[string]int{}, answer: func(tg string, n int) bool { return tg == "a" && n == 0 }}
		r := burst(context.Background(), f, ts, 3, 200*time.Millisecond, 5*time.Second)
		if r.Answered != 1 || r.Sent != 2 {
			t.Errorf("got %+v, want 2 sent, 1 answered", r)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		f := &fakeProber{calls: map[string]int{}, answer: func(string, int) bool { return false }}
		r := burst(ctx, f, ts, 3, 10*time.Millisecond, time.Second)
		if r.Answered != 0 {
			t.Errorf("got %+v", r)
		}
	})
}
