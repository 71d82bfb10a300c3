package probe

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// BurstResult is what a burst found.
type BurstResult struct {
	// Sent probes, and Answered of them. A burst stops sending at the
	// first answer, so Answered is 0 or 1 unless answers race.
	Sent, Answered int
	// Took is from the first probe to the verdict.
	Took time.Duration
}

// Burst confirms or clears a suspected outage at once (the traffic
// trigger, issue 20): it sends count probes to every target of s, gap
// apart (all targets at each step), and returns as soon as one is
// answered — any answer proves the uplink carries traffic both ways — or
// when the last probe has timed out (min(s.Timeout, s.Interval) after it
// was sent). It opens its own socket, so it runs beside Run.
func Burst(ctx context.Context, s Spec, count int, gap time.Duration) (BurstResult, error) {
	targets, err := s.parse()
	if err != nil {
		return BurstResult{}, fmt.Errorf("probe burst %s: %w", s.Uplink, err)
	}
	p, err := newProber(s, is6(s, targets))
	if err != nil {
		return BurstResult{}, fmt.Errorf("probe burst %s: %s: %w", s.Uplink, s.Method, err)
	}
	defer p.close()
	return burst(ctx, p, targets, count, gap, min(s.Timeout, s.Interval)), nil
}

// burst is Burst on an open prober.
func burst(ctx context.Context, p prober, targets []*target, count int, gap, timeout time.Duration) BurstResult {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Cancel before waiting (defers run last-in first-out): an answer
	// ends the probes still waiting for theirs.
	defer wg.Wait()
	defer cancel()
	var mu sync.Mutex
	var res BurstResult
	answered := make(chan struct{})
	var once sync.Once
	tick := time.NewTicker(max(gap, time.Millisecond))
	defer tick.Stop()
	for step := range max(count, 1) {
		if step > 0 {
			select {
			case <-answered:
				res.Took = time.Since(start)
				return res.snapshot(&mu)
			case <-ctx.Done():
				res.Took = time.Since(start)
				return res.snapshot(&mu)
			case <-tick.C:
			}
		}
		for _, t := range targets {
			mu.Lock()
			res.Sent++
			mu.Unlock()
			wg.Go(func() {
				if _, err := p.probe(ctx, t, timeout); err == nil {
					mu.Lock()
					res.Answered++
					mu.Unlock()
					once.Do(func() { close(answered) })
				}
			})
		}
	}
	// Everything is sent: wait for the first answer or the last timeout.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-answered:
	case <-done:
	case <-ctx.Done():
	}
	res.Took = time.Since(start)
	return res.snapshot(&mu)
}

func (r *BurstResult) snapshot(mu *sync.Mutex) BurstResult {
	mu.Lock()
	defer mu.Unlock()
	return *r
}
