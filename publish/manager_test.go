package publish

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/testutil"
)

// noLeaks checks that everything a test started has ended; hooks' process
// starter thread (which runs the command publisher's commands) lives for
// the whole process by design.
func noLeaks(t *testing.T) {
	t.Helper()
	goleak.VerifyNone(t, goleak.IgnoreTopFunction("github.com/uplinkd/uplinkd/hooks.processStarter"),
		goleak.IgnoreCurrent())
}

// fakePublisher records requests and answers from a script (then OK).
type fakePublisher struct {
	mu      sync.Mutex
	calls   []Request
	results []Result
	block   chan struct{} // if set, Publish waits for it or ctx
}

func (f *fakePublisher) Publish(ctx context.Context, req Request) Result {
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return Result{Outcome: Retry, Err: ctx.Err()}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, req)
	if len(f.results) > 0 {
		r := f.results[0]
		f.results = f.results[1:]
		return r
	}
	return Result{Outcome: OK, Reply: "good"}
}

func (f *fakePublisher) addrs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, c.Addr.String())
	}
	return out
}

type mgrRig struct {
	t      *testing.T
	clock  *hooks.FakeClock
	m      *Manager
	fake   *fakePublisher
	mu     sync.Mutex
	events []Event
}

func testSpec() Spec {
	return Spec{Uplink: "dsl", Iface: "ppp0", Name: "dyn", Kind: KindDynDNS2, Hostname: "home.example.net",
		Settle: 2 * time.Second, MinInterval: 30 * time.Second, Refresh: 600 * time.Hour}
}

func newRig(t *testing.T, spec Spec, stateDir string, fake *fakePublisher) *mgrRig {
	t.Helper()
	r := &mgrRig{t: t, clock: hooks.NewFakeClock(time.Time{}), fake: fake}
	m, err := NewManager([]Spec{spec}, Options{
		StateDir: stateDir, Log: quiet(), Clock: r.clock,
		OnResult:     func(ev Event) { r.mu.Lock(); r.events = append(r.events, ev); r.mu.Unlock() },
		NewPublisher: func(Spec, PublisherOptions) (Publisher, error) { return fake, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	m.rand = func() float64 { return 0.5 } // no jitter: exact backoff
	r.m = m
	return r
}

// waitEvents waits (real time) until n attempts have been reported.
func (r *mgrRig) waitEvents(n int) {
	r.t.Helper()
	testutil.WaitFor(r.t, "publish results", 20*time.Second, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.events) >= n
	})
}

// waitIdle waits until no publish of m runs. The fake clock runs due timers
// inside Advance and an attempt is marked running when it starts, so after
// Advance and waitIdle every attempt the advance started has finished.
func waitIdle(t *testing.T, m *Manager) {
	t.Helper()
	testutil.WaitFor(t, "no publish running", 20*time.Second, func() bool {
		for _, st := range m.Status() {
			if st.Result == "running" {
				return false
			}
		}
		return true
	})
}

// expectCalls asserts the addresses published so far, once any attempt
// (a wrongly started one too) has finished.
func (r *mgrRig) expectCalls(want ...string) {
	r.t.Helper()
	waitIdle(r.t, r.m)
	if got := r.fake.addrs(); !slices.Equal(got, want) {
		r.t.Fatalf("published %q, want %q", got, want)
	}
}

var (
	addrA = netip.MustParseAddr("198.51.100.10")
	addrB = netip.MustParseAddr("198.51.100.11")
	addrC = netip.MustParseAddr("198.51.100.12")
)

func TestPublishSettleAndFlaps(t *testing.T) {
	defer noLeaks(t)
	r := newRig(t, testSpec(), "", &fakePublisher{})
	defer r.m.Close()
	r.m.Update("dsl", addrA)
	r.clock.Advance(2*time.Second - time.Millisecond)
	r.expectCalls()
	r.clock.Advance(time.Millisecond)
	r.waitEvents(1)
	r.expectCalls("198.51.100.10")

	// Gone and back the same within settle: nothing.
	r.m.Update("dsl", netip.Addr{})
	r.clock.Advance(time.Second)
	r.m.Update("dsl", addrA)
	r.clock.Advance(time.Hour)
	r.expectCalls("198.51.100.10")

	// A flap to another address shorter than settle: nothing.
	r.m.Update("dsl", addrB)
	r.clock.Advance(1500 * time.Millisecond)
	r.m.Update("dsl", addrA)
	r.clock.Advance(time.Hour)
	r.expectCalls("198.51.100.10")

	// An address that keeps changing is published once it holds still.
	r.m.Update("dsl", addrB)
	r.clock.Advance(time.Second)
	r.m.Update("dsl", addrC)
	r.clock.Advance(time.Second)
	r.expectCalls("198.51.100.10")
	r.clock.Advance(time.Second)
	r.waitEvents(2)
	r.expectCalls("198.51.100.10", "198.51.100.12")
	// Repeated updates with the same address do nothing.
	for range 100 {
		r.m.Update("dsl", addrC)
		r.m.Update("other", addrA)
	}
	r.clock.Advance(time.Hour)
	r.expectCalls("198.51.100.10", "198.51.100.12")
}

// TestPublishFamily: a publisher with family ipv6 takes only UpdateIPv6's
// address, with the same settle rule, and an IPv4 one only Update's; the
// IPv6 one has a target (and so a state file verdict) of its own.
func TestPublishFamily(t *testing.T) {
	defer noLeaks(t)
	spec := testSpec()
	spec.IPv6 = true
	r := newRig(t, spec, "", &fakePublisher{})
	defer r.m.Close()
	a6 := netip.MustParseAddr("2001:db8::10")
	r.m.Update("dsl", addrA)
	r.clock.Advance(time.Hour)
	r.expectCalls()
	r.m.UpdateIPv6("dsl", a6)
	r.clock.Advance(2*time.Second - time.Millisecond)
	r.expectCalls()
	r.clock.Advance(time.Millisecond)
	r.waitEvents(1)
	r.expectCalls("2001:db8::10")
	r.m.Update("dsl", addrB)
	r.clock.Advance(time.Hour)
	r.expectCalls("2001:db8::10")
	r.mu.Lock()
	ev := r.events[0].HookEvent()
	r.mu.Unlock()
	if ev.Family != "ipv6" || ev.NewIP != "2001:db8::10" {
		t.Errorf("hook event %+v", ev)
	}
	if spec.target() == testSpec().target() {
		t.Error("an IPv6 publisher has the target of its IPv4 twin")
	}
}

func TestPublishRestart(t *testing.T) {
	defer noLeaks(t)
	dir := t.TempDir()
	spec := testSpec()
	r := newRig(t, spec, dir, &fakePublisher{})
	r.m.Update("dsl", addrA)
	r.clock.Advance(time.Minute)
	r.waitEvents(1)
	r.m.Close()
	file := filepath.Join(dir, "publish", "dsl", "dyn.json")
	b, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(b), `"address": "198.51.100.10"`) {
		t.Fatalf("state file: %v %s", err, b)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", fi.Mode())
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "publish", "dsl", ".*")); len(tmp) != 0 {
		t.Fatalf("temp files left: %v", tmp)
	}

	tests := []struct {
		name   string
		spec   func(*Spec)
		addr   netip.Addr
		want   []string
		oldIPs []string
	}{
		{"unchanged address publishes nothing", nil, addrA, nil, nil},
		{"changed address publishes exactly once", nil, addrB, []string{"198.51.100.11"}, []string{"198.51.100.10"}},
		{"new hostname publishes again", func(s *Spec) { s.Hostname = "other.example.net" }, addrA, []string{"198.51.100.10"}, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			os.MkdirAll(filepath.Join(d, "publish", "dsl"), 0o700)
			os.WriteFile(filepath.Join(d, "publish", "dsl", "dyn.json"), b, 0o600)
			s := spec
			if tt.spec != nil {
				tt.spec(&s)
			}
			r := newRig(t, s, d, &fakePublisher{})
			defer r.m.Close()
			r.m.Update("dsl", tt.addr)
			for range 10 {
				r.clock.Advance(time.Hour)
			}
			if len(tt.want) > 0 {
				r.waitEvents(len(tt.want))
			}
			r.expectCalls(tt.want...)
			var old []string
			for _, c := range r.fake.calls {
				old = append(old, addrString(c.Previous))
			}
			if !slices.Equal(old, tt.oldIPs) {
				t.Fatalf("previous %q, want %q", old, tt.oldIPs)
			}
		})
	}
}

func TestPublishMinIntervalAndRefresh(t *testing.T) {
	defer noLeaks(t)
	spec := testSpec()
	spec.Refresh = 24 * time.Hour
	r := newRig(t, spec, "", &fakePublisher{})
	defer r.m.Close()
	r.m.Update("dsl", addrA)
	r.clock.Advance(2 * time.Second) // published at t0+2s
	r.waitEvents(1)
	r.m.Update("dsl", addrB)
	r.clock.Advance(2 * time.Second) // settled, but min_interval (30s from t0+2s) holds it
	r.expectCalls("198.51.100.10")
	if p := r.clock.Pending(); len(p) != 1 || p[0] != 28*time.Second {
		t.Fatalf("pending %v, want [28s]", p)
	}
	r.clock.Advance(28 * time.Second)
	r.waitEvents(2)
	r.expectCalls("198.51.100.10", "198.51.100.11")
	r.clock.Advance(24*time.Hour - time.Second)
	r.expectCalls("198.51.100.10", "198.51.100.11")
	r.clock.Advance(time.Second)
	r.waitEvents(3)
	r.expectCalls("198.51.100.10", "198.51.100.11", "198.51.100.11")

	t.Run("refresh 0 never republishes", func(t *testing.T) {
		spec := testSpec()
		spec.Refresh = 0
		r := newRig(t, spec, "", &fakePublisher{})
		defer r.m.Close()
		r.m.Update("dsl", addrA)
		r.clock.Advance(time.Minute)
		r.waitEvents(1)
		for range 100 {
			r.clock.Advance(1000 * time.Hour)
		}
		r.expectCalls("198.51.100.10")
		if len(r.clock.Pending()) != 0 {
			t.Fatalf("timers pending: %v", r.clock.Pending())
		}
	})
}

func TestPublishBackoffAndPermanent(t *testing.T) {
	defer noLeaks(t)
	retry := Result{Outcome: Retry, Reply: "911", Err: errors.New("server says 911")}
	fake := &fakePublisher{results: []Result{retry, retry, retry}}
	spec := testSpec()
	spec.MinInterval = 0
	r := newRig(t, spec, "", fake)
	defer r.m.Close()
	r.m.Update("dsl", addrA)
	r.clock.Advance(2 * time.Second)
	for i, want := range []time.Duration{30 * time.Second, 60 * time.Second, 120 * time.Second} {
		r.waitEvents(i + 1)
		r.clock.WaitForTimers(1, time.Second)
		if p := r.clock.Pending(); len(p) != 1 || p[0] != want {
			t.Fatalf("after failure %d: pending %v, want [%v]", i+1, p, want)
		}
		st := r.m.Status()[0]
		if st.Result != "retry" || st.Reply != "911" || st.Pending != addrA || !st.NextTry.Equal(r.clock.Now().Add(want)) {
			t.Fatalf("status %+v", st)
		}
		r.clock.Advance(want)
	}
	r.waitEvents(4)
	r.expectCalls("198.51.100.10", "198.51.100.10", "198.51.100.10", "198.51.100.10")
	if st := r.m.Status()[0]; st.Result != "ok" || st.Address != addrA || st.Pending.IsValid() {
		t.Fatalf("status %+v", st)
	}

	// Permanent: no retry, not even for a new address.
	fake.mu.Lock()
	fake.results = []Result{{Outcome: Permanent, Reply: "badauth", Err: errors.New("server says badauth")}}
	fake.mu.Unlock()
	r.m.Update("dsl", addrB)
	r.clock.Advance(2 * time.Second)
	r.waitEvents(5)
	r.m.Update("dsl", addrC)
	for range 10 {
		r.clock.Advance(time.Hour)
	}
	r.expectCalls("198.51.100.10", "198.51.100.10", "198.51.100.10", "198.51.100.10", "198.51.100.11")
	st := r.m.Status()[0]
	if st.Result != "permanent" || st.Reply != "badauth" || !st.NextTry.IsZero() || st.Address != addrA {
		t.Fatalf("status %+v", st)
	}
	r.mu.Lock()
	last := r.events[len(r.events)-1]
	r.mu.Unlock()
	hev := last.HookEvent()
	if hev.Event != "publish" || hev.Result != "permanent" || hev.Publisher != "dyn" || hev.NewIP != "198.51.100.11" ||
		hev.OldIP != "198.51.100.10" || hev.Iface != "ppp0" || hev.Reason != "server says badauth" {
		t.Fatalf("hook event %+v", hev)
	}
}

// TestPublishUpdateNeverBlocks: a publish stuck on the network holds up
// neither Update nor Status, and Close cancels it and waits for it.
func TestPublishUpdateNeverBlocks(t *testing.T) {
	defer noLeaks(t)
	fake := &fakePublisher{block: make(chan struct{})}
	spec := testSpec()
	spec.Settle = 0
	r := newRig(t, spec, "", fake)
	r.m.Update("dsl", addrA) // starts the attempt, which blocks
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			r.m.Update("dsl", []netip.Addr{addrB, addrC}[i%2])
			r.m.Status()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Update blocked behind a running publish")
	}
	if st := r.m.Status()[0]; st.Result != "running" {
		t.Fatalf("status %+v", st)
	}
	r.m.Close() // cancels the blocked publish
	r.m.Close()
	r.m.Update("dsl", addrA) // no effect, no panic
}

func TestPublishManagerRejectsBadSpecs(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte("hunter2-secret\n"), 0o644)
	specs := []Spec{
		{Uplink: "a", Name: "x", Kind: KindCommand},
		{Uplink: "a", Name: "y", Kind: KindDynDNS2, URL: mustURL("https://dyn.example.net"), Hostname: "h.example.net", PasswordFile: loose},
		{Uplink: "a", Name: "y", Kind: KindCommand, Command: []string{"true"}},
		{Uplink: "a", Name: "z", Kind: "carrier-pigeon"},
	}
	_, err := NewManager(specs, Options{Log: quiet()})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"publisher x: command publisher: empty command", "publisher y: dyndns2: password_file " + loose + ": mode 0644",
		`publisher "y" defined twice`, `unknown publisher kind "carrier-pigeon"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatal("error reveals the secret")
	}
}

func TestPublishStatusJSON(t *testing.T) {
	st := Status{Uplink: "dsl", Name: "dyn", Kind: KindDynDNS2, Pending: addrA, Result: "retry", Reply: "911",
		NextTry: time.Date(2024, 1, 1, 0, 0, 30, 0, time.UTC)}
	b, err := json.Marshal(st)
	want := `{"uplink":"dsl","name":"dyn","kind":"dyndns2","pending":"198.51.100.10","result":"retry","reply":"911","next_try":"2024-01-01T00:00:30Z"}`
	if err != nil || string(b) != want {
		t.Fatalf("got %s %v\nwant %s", b, err, want)
	}
}

// TestPublishCommandTimeoutThroughManager: the command's own timeout, not
// the manager's backstop deadline, ends a hanging command, so it is
// reported as a timeout and retried.
func TestPublishCommandTimeoutThroughManager(t *testing.T) {
	defer noLeaks(t)
	dir := t.TempDir()
	spec := Spec{Uplink: "dsl", Iface: "ppp0", Name: "cmd", Kind: KindCommand,
		Command: []string{testutil.Script(t, dir, "hang", "exec sleep 60")}, Timeout: 200 * time.Millisecond}
	got := make(chan Event, 1)
	m, err := NewManager([]Spec{spec}, Options{Log: quiet(), Clock: hooks.NewFakeClock(time.Time{}),
		OnResult: func(ev Event) { got <- ev }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Update("dsl", addrA)
	select {
	case ev := <-got:
		if ev.Result != "retry" || ev.Reply != "timeout" || !strings.Contains(ev.Reason, "timed out after 200ms") {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no result")
	}
}

// TestPublishMinIntervalSpansRestarts: a failed attempt is recorded too, so
// a daemon restarting in a loop still waits min_interval between attempts.
func TestPublishMinIntervalSpansRestarts(t *testing.T) {
	defer noLeaks(t)
	dir := t.TempDir()
	bad := Result{Outcome: Permanent, Reply: "badauth", Err: errors.New("server says badauth")}
	r := newRig(t, testSpec(), dir, &fakePublisher{results: []Result{bad}})
	r.m.Update("dsl", addrA)
	r.clock.Advance(2 * time.Second) // attempt at t0+2s
	r.waitEvents(1)
	r.m.Close()

	r2 := newRig(t, testSpec(), dir, &fakePublisher{}) // the clock starts at t0 again
	defer r2.m.Close()
	r2.m.Update("dsl", addrA)
	if p := r2.clock.Pending(); len(p) != 1 || p[0] != 32*time.Second {
		t.Fatalf("pending %v, want [32s] (last attempt at 2s + min_interval 30s)", p)
	}
	r2.clock.Advance(32*time.Second - time.Millisecond)
	r2.expectCalls()
	r2.clock.Advance(time.Millisecond)
	r2.waitEvents(1)
	r2.expectCalls("198.51.100.10")
}
