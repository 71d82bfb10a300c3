package publish

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/testutil"
)

// TestPublishInFlightAtKill (issue 17.8): the state file records a
// publish's intent before the request goes out. The daemon is killed
// (kill -9) while the publish is in flight: the file as it is on disk at
// that moment is all the next start has. It sends the address again (at
// least once: the server may or may not have got it), but not before
// min_interval after the interrupted attempt, and logs why.
func TestPublishInFlightAtKill(t *testing.T) {
	defer noLeaks(t)
	dir := t.TempDir()
	fake := &fakePublisher{block: make(chan struct{})}
	r := newRig(t, testSpec(), dir, fake)
	r.m.Update("dsl", addrA)
	r.clock.Advance(2 * time.Second) // settled: the attempt starts at t0+2s and hangs
	file := filepath.Join(dir, "publish", "dsl", "dyn.json")
	var st publishState
	testutil.WaitFor(t, "the intent on disk", 5*time.Second, func() bool {
		b, err := os.ReadFile(file)
		return err == nil && json.Unmarshal(b, &st) == nil && st.InFlight == addrA
	})
	// kill -9 now: what survives is this file.
	killed := t.TempDir()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(killed, "publish", "dsl"), 0o700)
	if err := os.WriteFile(filepath.Join(killed, "publish", "dsl", "dyn.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if st.Address.IsValid() || !st.LastAttempt.Equal(r.clock.Now()) {
		t.Fatalf("intent %+v: want nothing published yet and the attempt's start", st)
	}
	close(fake.block)
	r.waitEvents(1)
	r.m.Close()
	// The attempt ended here: the intent is gone, the result recorded.
	b, _ = os.ReadFile(file)
	var done publishState
	if json.Unmarshal(b, &done) != nil || done.InFlight.IsValid() || done.Address != addrA {
		t.Fatalf("state after the attempt: %s", b)
	}

	// The restart after the kill (the clock starts at t0 again).
	log, logs := testutil.NewCapture()
	clk := hooks.NewFakeClock(time.Time{})
	again := &fakePublisher{}
	m, err := NewManager([]Spec{testSpec()}, Options{StateDir: killed, Log: log, Clock: clk,
		NewPublisher: func(Spec, PublisherOptions) (Publisher, error) { return again, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if recs := logs.Find(t, "a publish was in flight when uplinkd stopped; it may have reached the server and is sent again (at least once)",
		map[string]any{"in_flight": addrA.String(), "publisher": "dyn"}); len(recs) != 1 {
		t.Fatalf("no record of the interrupted publish: %v", logs.Records(t))
	}
	m.Update("dsl", addrA)
	if p := clk.Pending(); len(p) != 1 || p[0] != 32*time.Second {
		t.Fatalf("pending %v, want [32s] (the interrupted attempt at 2s + min_interval 30s)", p)
	}
	clk.Advance(32 * time.Second)
	testutil.WaitFor(t, "the address sent again", 5*time.Second, func() bool { return len(again.addrs()) == 1 })
	if got := again.addrs(); got[0] != addrA.String() {
		t.Fatalf("sent %q, want %s again", got, addrA)
	}
}
