package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/backoff"
)

// Options configures a Manager.
type Options struct {
	// StateDir is [daemon] state_dir; "" keeps no state (every start
	// publishes once).
	StateDir string
	// Version goes into the dyndns2 User-Agent, "uplinkd/<Version>".
	Version string
	Log     *slog.Logger // nil: slog.Default()
	Clock   hooks.Clock  // nil: the real clock
	// OnResult, if set, is called after every attempt (not on the caller's
	// goroutine of Update), e.g. to fire the `publish` hook event with
	// ev.HookEvent(). It must not block for long: the publisher's next
	// attempt waits for it.
	OnResult func(ev Event)
	// NewPublisher builds each publisher; nil is New, which runs dyndns2
	// and rfc2136 in uplinkd-helper. Tests pass fakes, or remote.New to
	// run those publishers in-process with Dial.
	NewPublisher func(Spec, PublisherOptions) (Publisher, error)
	// Dial, if set, goes to NewPublisher as PublisherOptions.Dial.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Rand returns [0,1) for the retry jitter; nil: math/rand/v2.
	Rand func() float64
}

// Event reports one attempt.
type Event struct {
	Uplink, Iface, Publisher string
	Kind                     Kind
	IPv6                     bool       // the publisher's family is ipv6
	OldIP, NewIP             netip.Addr // last published before / attempted now
	Result                   string     // ok | retry | permanent
	Reply                    string     // the server's answer, if any
	Reason                   string     // why it failed ("" when ok)
	Duration                 time.Duration
	NextTry                  time.Time // zero: nothing scheduled
}

// HookEvent is the `publish` hook event of ev (UPLINKD_RESULT, _PUBLISHER).
func (ev Event) HookEvent() hooks.HookEvent {
	return hooks.HookEvent{Event: "publish", Uplink: ev.Uplink, Iface: ev.Iface, OldIP: addrString(ev.OldIP),
		NewIP: addrString(ev.NewIP), Reason: ev.Reason, Result: ev.Result, Publisher: ev.Publisher, Family: familyName(ev.IPv6)}
}

// Status is one publisher's line in `uplinkd status`.
type Status struct {
	Uplink      string     `json:"uplink"`
	Name        string     `json:"name"`
	Kind        Kind       `json:"kind"`
	Address     netip.Addr `json:"address,omitzero"` // last published (zero: never)
	PublishedAt time.Time  `json:"published_at,omitzero"`
	Pending     netip.Addr `json:"pending,omitzero"` // the current address when it is not published yet
	Result      string     `json:"result,omitempty"` // of the last attempt: ok | retry | permanent; running; "" (none yet)
	Reply       string     `json:"reply,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	LastAttempt time.Time  `json:"last_attempt,omitzero"`
	NextTry     time.Time  `json:"next_try,omitzero"` // zero: nothing scheduled
}

// Manager owns every publisher of every uplink. The daemon calls
// Update after each pass with each uplink's current address; everything
// else (waiting for the address to settle, min_interval, retries with
// backoff, the periodic refresh, the state files) happens on the manager's
// timers and goroutines. Per publisher:
//
//   - an address is published once it has been the uplink's address for
//     Settle without interruption; an address that goes and comes back the
//     same within Settle, or any address equal to the one last published,
//     publishes nothing;
//   - two attempts are at least MinInterval apart; a failed attempt is
//     retried after Backoff, doubling to MaxBackoff, jittered;
//   - a permanent failure stops the publisher until the manager is
//     recreated (a config reload);
//   - an unchanged address is republished after Refresh (0: never).
//
// All methods are safe for concurrent use.
type Manager struct {
	log      *slog.Logger
	clock    hooks.Clock
	stateDir string
	onResult func(Event)
	rand     func() float64 // [0,1), jitter; replaceable in tests

	ctx    context.Context // canceled by Close: in-flight publishes stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	pubs     []*publisherState
	byUplink map[string][]*publisherState
}

type publisherState struct {
	spec  Spec
	pub   Publisher
	state string // state file ("" = none)

	published   netip.Addr
	publishedAt time.Time

	known    bool // Update has reported the uplink at least once
	cur      netip.Addr
	curSince time.Time

	running     bool
	permanent   bool
	failures    int
	retryAt     time.Time
	lastAttempt time.Time
	lastResult  Result
	attempted   bool // an attempt finished or runs in this process (lastResult is valid)

	timer   hooks.Timer
	gen     uint64
	nextTry time.Time
}

// NewManager checks every spec (secret files included) and loads the
// state files. The error names each bad publisher; nothing runs until the
// first Update.
func NewManager(specs []Spec, opts Options) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Clock == nil {
		opts.Clock = hooks.RealClock()
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	m := &Manager{log: opts.Log, clock: opts.Clock, stateDir: opts.StateDir, onResult: opts.OnResult,
		rand: opts.Rand, byUplink: map[string][]*publisherState{}}
	var errs []error
	seen := map[[2]string]bool{}
	for _, spec := range specs {
		key := [2]string{spec.Uplink, spec.Name}
		if seen[key] {
			errs = append(errs, fmt.Errorf("uplink %s: publisher %q defined twice", spec.Uplink, spec.Name))
			continue
		}
		seen[key] = true
		if spec.Timeout <= 0 {
			spec.Timeout = DefaultTimeout
		}
		newPub := New
		if opts.NewPublisher != nil {
			newPub = opts.NewPublisher
		}
		pub, err := newPub(spec, PublisherOptions{Log: opts.Log, Version: opts.Version, Dial: opts.Dial})
		if err != nil {
			errs = append(errs, fmt.Errorf("uplink %s: publisher %s: %w", spec.Uplink, spec.Name, err))
			continue
		}
		p := &publisherState{spec: spec, pub: pub}
		if m.stateDir != "" {
			p.state = statePath(m.stateDir, spec)
			st, err := loadPublishState(p.state, spec)
			if err != nil {
				m.log.Warn("publish state unreadable; the address will be published again",
					"event", "publish", "uplink", spec.Uplink, "publisher", spec.Name, "reason", err.Error())
			}
			p.published, p.publishedAt, p.lastAttempt = st.Address, st.PublishedAt, st.LastAttempt
			if st.InFlight.IsValid() {
				m.log.Warn("a publish was in flight when uplinkd stopped; it may have reached the server and is sent again (at least once)",
					"event", "publish", "uplink", spec.Uplink, "publisher", spec.Name, "in_flight", st.InFlight.String(),
					"last_attempt", st.LastAttempt)
			}
		}
		m.pubs = append(m.pubs, p)
		m.byUplink[spec.Uplink] = append(m.byUplink[spec.Uplink], p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Update reports uplink's current IPv4 address (the zero Addr: it has
// none) to its IPv4 publishers. It never blocks on I/O: it records the
// address and (re)arms timers; repeated calls with the same address cost a
// map lookup.
func (m *Manager) Update(uplink string, addr netip.Addr) { m.update(uplink, false, addr) }

// UpdateIPv6 is Update for the uplink's IPv6 address and its publishers
// with family ipv6: the same settle, min_interval, backoff and refresh.
func (m *Manager) UpdateIPv6(uplink string, addr netip.Addr) { m.update(uplink, true, addr) }

func (m *Manager) update(uplink string, v6 bool, addr netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	now := m.clock.Now()
	for _, p := range m.byUplink[uplink] {
		if p.spec.IPv6 != v6 || p.known && p.cur == addr {
			continue
		}
		p.known, p.cur, p.curSince = true, addr, now
		m.scheduleLocked(p, now)
	}
}

// scheduleLocked decides the next attempt of p and arms its timer, or starts
// the attempt when it is due now.
func (m *Manager) scheduleLocked(p *publisherState, now time.Time) {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.gen++
	p.nextTry = time.Time{}
	if m.closed || p.running || p.permanent || !p.known || !p.cur.IsValid() {
		return
	}
	var due time.Time
	if p.cur == p.published {
		if p.spec.Refresh <= 0 {
			return
		}
		due = p.publishedAt.Add(p.spec.Refresh)
	} else {
		due = p.curSince.Add(p.spec.Settle)
	}
	if !p.lastAttempt.IsZero() {
		due = later(due, p.lastAttempt.Add(p.spec.MinInterval))
	}
	if p.failures > 0 {
		due = later(due, p.retryAt)
	}
	p.nextTry = due
	if !due.After(now) {
		m.startLocked(p, now)
		return
	}
	gen := p.gen
	p.timer = m.clock.AfterFunc(due.Sub(now), func() { m.fire(p, gen) })
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (m *Manager) fire(p *publisherState, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Stop can lose the race against a firing timer; gen tells.
	if gen != p.gen || m.closed {
		return
	}
	p.timer = nil
	m.scheduleLocked(p, m.clock.Now())
}

func (m *Manager) startLocked(p *publisherState, now time.Time) {
	p.running, p.attempted, p.lastAttempt, p.nextTry = true, true, now, time.Time{}
	req := Request{Addr: p.cur, Previous: p.published}
	m.wg.Add(1)
	go m.attempt(p, req)
}

// attempt runs one publish on its own goroutine.
func (m *Manager) attempt(p *publisherState, req Request) {
	defer m.wg.Done()
	spec := p.spec
	// Each publisher enforces spec.Timeout itself (and reports it as a
	// timeout); this deadline is only a backstop, so it must not win the
	// race against theirs.
	ctx, cancel := context.WithTimeout(m.ctx, spec.Timeout+time.Second)
	if p.state != "" {
		// The intent goes to disk before the request goes out: a daemon
		// killed now sends it again after its restart, but keeps
		// min_interval from this attempt (docs/publish.md).
		st := publishState{Uplink: spec.Uplink, Publisher: spec.Name, Kind: string(spec.Kind), Target: spec.target(),
			Address: req.Previous, PublishedAt: p.publishedAt, LastAttempt: m.clock.Now(), InFlight: req.Addr}
		if err := savePublishState(p.state, st); err != nil {
			m.log.Error("publish intent not saved; publishing anyway", "event", "publish", "uplink", spec.Uplink,
				"publisher", spec.Name, "reason", err.Error())
		}
	}
	start := time.Now()
	res := p.pub.Publish(ctx, req)
	cancel()
	took := time.Since(start)
	now := m.clock.Now()
	// Only this goroutine runs for p until running is cleared below (and
	// it alone writes p.published*), so writing the state file here,
	// unlocked, cannot race another write. The attempt is recorded even
	// when it failed: min_interval then holds across restarts, so a daemon
	// in a restart loop cannot hammer a provider that refuses it.
	var saveErr error
	if p.state != "" {
		st := publishState{Uplink: spec.Uplink, Publisher: spec.Name, Kind: string(spec.Kind), Target: spec.target(),
			Address: req.Previous, PublishedAt: p.publishedAt, LastAttempt: now}
		if res.Outcome == OK {
			st.Address, st.PublishedAt = req.Addr, now
		}
		saveErr = savePublishState(p.state, st)
	}

	m.mu.Lock()
	p.running, p.lastResult = false, res
	switch res.Outcome {
	case OK:
		p.published, p.publishedAt, p.failures, p.retryAt = req.Addr, now, 0, time.Time{}
	case Retry:
		p.failures++
		d := publishRetry.Delay(p.failures - 1)
		p.retryAt = now.Add(backoff.Jitter(d, MaxBackoff, hooks.JitterFraction, m.rand()))
	case Permanent:
		p.permanent = true
	}
	closed := m.closed
	m.scheduleLocked(p, now)
	ev := Event{Uplink: spec.Uplink, Iface: spec.Iface, Publisher: spec.Name, Kind: spec.Kind, IPv6: spec.IPv6,
		OldIP: req.Previous, NewIP: req.Addr, Result: res.Outcome.String(), Reply: res.Reply, Duration: took, NextTry: p.nextTry}
	m.mu.Unlock()
	if res.Err != nil {
		ev.Reason = res.Err.Error()
	}

	fields := []any{"event", "publish", "uplink", spec.Uplink, "iface", spec.Iface, "publisher", spec.Name, "kind", string(spec.Kind),
		"old_ip", addrString(req.Previous), "new_ip", addrString(req.Addr), "result", ev.Result, "reply", ev.Reply,
		slog.Duration("duration", took)}
	if ev.Reason != "" {
		fields = append(fields, "reason", ev.Reason)
	}
	if !ev.NextTry.IsZero() {
		fields = append(fields, slog.Duration("next_try_in", ev.NextTry.Sub(now)))
	}
	switch {
	case closed:
		m.log.Info("publish ended by shutdown", fields...)
		return
	case res.Outcome == OK:
		m.log.Info("address published", fields...)
	case res.Outcome == Retry:
		m.log.Warn("publish failed, will retry", fields...)
	default:
		m.log.Error("publish failed permanently; fix the config and reload", fields...)
	}
	if saveErr != nil {
		m.log.Error("publish state not saved; a restart will publish again", "event", "publish", "uplink", spec.Uplink,
			"publisher", spec.Name, "reason", saveErr.Error())
	}
	if m.onResult != nil {
		m.onResult(ev)
	}
}

// Status returns every publisher's state, in config order.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.pubs))
	for _, p := range m.pubs {
		st := Status{Uplink: p.spec.Uplink, Name: p.spec.Name, Kind: p.spec.Kind, Address: p.published,
			PublishedAt: p.publishedAt, LastAttempt: p.lastAttempt, NextTry: p.nextTry}
		if p.cur.IsValid() && p.cur != p.published {
			st.Pending = p.cur
		}
		if p.attempted && !p.running {
			st.Result, st.Reply = p.lastResult.Outcome.String(), p.lastResult.Reply
			if p.lastResult.Err != nil {
				st.Reason = p.lastResult.Err.Error()
			}
		}
		if p.running {
			st.Result = "running"
		}
		out = append(out, st)
	}
	return out
}

// Wait returns once every attempt started so far has finished and its
// result has been reported (OnResult returned). Call it only when no
// Update or timer can start another: tests, after their fake clock's last
// advance.
func (m *Manager) Wait() { m.wg.Wait() }

// Close stops all timers, cancels publishes in flight and waits for their
// goroutines. Update does nothing afterwards. Safe to call twice.
func (m *Manager) Close() {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		for _, p := range m.pubs {
			m.scheduleLocked(p, m.clock.Now())
		}
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}
