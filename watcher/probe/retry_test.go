package probe

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// scriptProber answers each probe as its script says, by the probe's
// number (0 first): "ok" at once, "fail" with a definite error at once,
// "late" after the probe's whole timeout. Probes past the script are lost.
type scriptProber struct {
	mu     sync.Mutex
	script []string
	calls  int
}

func (p *scriptProber) probe(ctx context.Context, _ *target, timeout time.Duration) (time.Duration, error) {
	p.mu.Lock()
	n := p.calls
	p.calls++
	p.mu.Unlock()
	what := "lost"
	if n < len(p.script) {
		what = p.script[n]
	}
	switch what {
	case "ok":
		return time.Duration(n+1) * time.Millisecond, nil
	case "fail":
		return 0, errors.New("connection refused")
	}
	select {
	case <-time.After(timeout):
		return 0, errTimeout(timeout)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *scriptProber) close() error { return nil }

// TestProbeTargetRetries: a target that has not answered gets its retries,
// the first answer wins, a definite failure ends the round at once, and
// the probes sent are counted. The timeout is long (the retries of a target
// without an RTT on record are a third of it apart) so that a busy machine
// cannot push a retry past it.
func TestProbeTargetRetries(t *testing.T) {
	const timeout = 3 * time.Second
	tests := []struct {
		name     string
		retries  int
		script   []string
		wantOK   bool
		wantSent int
		wantRTT  time.Duration
		wantErr  string
	}{
		{"answered at once", 2, []string{"ok"}, true, 1, time.Millisecond, ""},
		{"first lost, retry answered", 2, []string{"lost", "ok"}, true, 2, 2 * time.Millisecond, ""},
		{"two lost, last retry answered", 2, []string{"lost", "lost", "ok"}, true, 3, 3 * time.Millisecond, ""},
		{"all lost", 2, nil, false, 3, 0, "timeout after 3s"},
		{"no retries", 0, []string{"lost", "ok"}, false, 1, 0, "timeout after 3s"},
		{"definite failure: no retry", 2, []string{"fail", "ok"}, false, 1, 0, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := &scriptProber{script: tt.script}
			rtt, sent, err := probeTarget(context.Background(), p, &target{raw: "x"}, timeout, tt.retries)
			if (err == nil) != tt.wantOK || sent != tt.wantSent || rtt != tt.wantRTT {
				t.Fatalf("rtt %v, sent %d, err %v; want ok %v, rtt %v, sent %d", rtt, sent, err, tt.wantOK, tt.wantRTT, tt.wantSent)
			}
			if err != nil && err.Error() != tt.wantErr {
				t.Fatalf("error %q, want %q", err, tt.wantErr)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.calls != sent {
				t.Fatalf("%d probes made, %d reported sent", p.calls, sent)
			}
		})
	}
}

// TestRetryAfter: the spacing follows the target's slowest recent RTT,
// with a floor, and splits the timeout while nothing is on record.
func TestRetryAfter(t *testing.T) {
	tg := &target{raw: "x"}
	if got := tg.retryAfter(900*time.Millisecond, 2); got != 300*time.Millisecond {
		t.Errorf("no RTT on record: %v, want a third of the timeout", got)
	}
	tg.noteRTT(10 * time.Millisecond)
	if got := tg.retryAfter(900*time.Millisecond, 2); got != minRetryAfter {
		t.Errorf("fast line: %v, want the floor %v", got, minRetryAfter)
	}
	tg.noteRTT(150 * time.Millisecond)
	if got := tg.retryAfter(900*time.Millisecond, 2); got != 600*time.Millisecond {
		t.Errorf("slowest recent 150ms: %v, want 600ms", got)
	}
	for range recentRTTs {
		tg.noteRTT(20 * time.Millisecond)
	}
	if got := tg.retryAfter(900*time.Millisecond, 2); got != minRetryAfter {
		t.Errorf("the slow answer aged out: %v, want %v", got, minRetryAfter)
	}
}

// TestICMPRetriesOnLoss: the far end drops every echo request with an
// even sequence number, so a round's first probe to the one target is lost
// every other round at least; with a retry (the next number) every round is
// answered, and the results count two probes for those rounds. Without
// retries such rounds fail.
func TestICMPRetriesOnLoss(t *testing.T) {
	tp := newTopo(t)
	tp.drop(t, `iifname "sa" icmp type echo-request icmp sequence & 1 == 0`)
	s := tp.spec("a", MethodICMP, inetIP)
	s.Interval, s.Timeout, s.Retries = 1500*time.Millisecond, time.Second, 1
	r := start(t, s)
	retried := 0
	for i := range 6 {
		rs, _ := r.round(t)
		checkOK(t, rs)
		switch rs[0].Sent {
		case 1:
			if i > 0 {
				t.Fatalf("round %d answered by its first probe although every other number is dropped: %+v", i, rs[0])
			}
		case 2:
			retried++
		default:
			t.Fatalf("round %d sent %d probes, want 1 or 2: %+v", i, rs[0].Sent, rs[0])
		}
	}
	if retried < 5 {
		t.Fatalf("%d of 6 rounds retried, want at least 5", retried)
	}

	s.Retries = 0
	r0 := start(t, s)
	failed := 0
	for range 4 {
		rs, _ := r0.round(t)
		if !rs[0].OK {
			failed++
		}
	}
	if failed < 2 {
		t.Fatalf("without retries %d of 4 rounds failed, want at least 2 (every other one)", failed)
	}
}
