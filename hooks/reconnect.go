package hooks

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults when a ReconnectSpec leaves a duration zero; they match the
// config loader's defaults (DESIGN §4).
const (
	DefaultBackoff    = 5 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultTimeout    = 30 * time.Second
)

// jitterFraction spreads retries ±20% so that uplinks which went down together
// (a shared DSLAM, a power cut) do not redial in lockstep.
const jitterFraction = 0.2

// ReconnectSpec is what one uplink's Reconnector runs.
type ReconnectSpec struct {
	Uplink, Iface, Kind  string   // Kind: ppp | wlan | ethernet
	Command, StopCommand []string // resolved argv (see DefaultCommands)
	// Backoff is the delay after the first attempt; it doubles after each
	// further attempt up to MaxBackoff. Timeout bounds each command.
	Backoff, MaxBackoff, Timeout time.Duration
}

// DefaultCommands resolves the reconnect argv of an uplink. A configured
// command wins and is used with the configured stop command as is (a custom
// redial script should not get a poff it did not ask for). Otherwise, by kind:
//
//	ppp:      pon PEER / poff PEER (a configured stop command still wins)
//	wlan:     wpa_cli -i IFACE reassociate, no stop command
//	ethernet: none (nothing to redial; the caller should not reconnect)
//
// peer is the config's `peer`, or the uplink name when that is empty (the
// caller knows the name; if it passes "" the interface name is used). The
// returned slices never alias the arguments.
func DefaultCommands(kind, iface, peer string, command, stop []string) (cmd, stopCmd []string) {
	if len(command) > 0 {
		return slices.Clone(command), slices.Clone(stop)
	}
	switch kind {
	case "ppp":
		if peer == "" {
			peer = iface
		}
		cmd = []string{"pon", peer}
		stopCmd = []string{"poff", peer}
		if len(stop) > 0 {
			stopCmd = slices.Clone(stop)
		}
		return cmd, stopCmd
	case "wlan":
		return []string{"wpa_cli", "-i", iface, "reassociate"}, slices.Clone(stop)
	default:
		return nil, nil
	}
}

// Reconnector runs one uplink's reconnect command while the daemon says the
// uplink is down: at once, then with exponential backoff and jitter. It never
// runs two attempts at the same time. All methods are safe for concurrent use.
//
// A command exiting 0 does not end the cycle (pon returns before the link is
// up); only Down(false) does.
type Reconnector struct {
	spec  ReconnectSpec
	log   *slog.Logger
	clock Clock
	env   func() []string
	rand  func() float64 // [0,1); replaceable so tests can pin the jitter

	// ctx is canceled by Close after the grace period, which kills a running
	// attempt's process group.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	onAttempt func(HookEvent)
	down      bool
	running   bool
	closed    bool
	timer     Timer  // the scheduled next attempt, if any
	gen       uint64 // identifies the live timer; a stale callback sees a mismatch
	next      time.Duration
	attempts  int // started in total
	cycle     int // started since the uplink last came back
}

// NewReconnector returns an idle Reconnector. Zero durations in spec get the
// package defaults; a nil clock is the real clock; env, if not nil, is called
// before every attempt for extra environment variables (KEY=value).
func NewReconnector(spec ReconnectSpec, log *slog.Logger, clock Clock, env func() []string) *Reconnector {
	if spec.Backoff <= 0 {
		spec.Backoff = DefaultBackoff
	}
	if spec.MaxBackoff <= 0 {
		spec.MaxBackoff = max(DefaultMaxBackoff, spec.Backoff)
	}
	if spec.MaxBackoff < spec.Backoff {
		spec.MaxBackoff = spec.Backoff
	}
	if spec.Timeout <= 0 {
		spec.Timeout = DefaultTimeout
	}
	spec.Command, spec.StopCommand = slices.Clone(spec.Command), slices.Clone(spec.StopCommand)
	if log == nil {
		log = slog.Default()
	}
	if clock == nil {
		clock = RealClock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Reconnector{
		spec:   spec,
		log:    log.With("event", "reconnect", "uplink", spec.Uplink, "iface", spec.Iface),
		clock:  clock,
		env:    env,
		rand:   rand.Float64,
		ctx:    ctx,
		cancel: cancel,
		next:   spec.Backoff,
	}
}

// Down tells the Reconnector whether the uplink needs reconnecting; the caller
// decides when (interface gone, no carrier, failed for reconnect_after) and
// may repeat itself freely.
//
// Down(true) starts an attempt at once unless one is running or scheduled;
// while the uplink stays down, each finished attempt schedules the next after
// the current backoff. Down(false) cancels the scheduled attempt and resets
// the backoff; a running attempt is left to finish (killing pon half-way
// helps nobody) and its result is only logged.
func (r *Reconnector) Down(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if !down {
		if r.down && r.cycle > 0 {
			r.log.Debug("uplink back, reconnect cycle ends", "attempts", r.cycle)
		}
		r.down = false
		r.stopTimerLocked()
		r.next = r.spec.Backoff
		r.cycle = 0
		return
	}
	r.down = true
	if len(r.spec.Command) == 0 || r.running || r.timer != nil {
		return
	}
	r.startLocked()
}

// OnAttempt sets f to be called after every finished attempt with a
// `reconnect` HookEvent (Result: ok | failed | timeout | canceled | error,
// Reason: why it failed, Attempt: its number in the current down period),
// ready for [Runner.Fire]. f runs on the attempt's goroutine after the
// attempt's log record, so it must not block for long; nil clears it.
func (r *Reconnector) OnAttempt(f func(HookEvent)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onAttempt = f
}

// Attempts returns how many attempts have been started since creation.
func (r *Reconnector) Attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts
}

// Close stops scheduling and waits for a running attempt; if it is not done
// within the spec's Timeout its process group is killed. Down has no effect
// afterwards.
func (r *Reconnector) Close() {
	r.mu.Lock()
	r.closed = true
	r.stopTimerLocked()
	r.mu.Unlock()

	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	grace := time.NewTimer(r.spec.Timeout)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		r.cancel()
		<-done
	}
	r.cancel()
}

func (r *Reconnector) stopTimerLocked() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.gen++
}

func (r *Reconnector) startLocked() {
	r.attempts++
	r.cycle++
	r.running = true
	r.wg.Add(1)
	go r.attempt(r.cycle)
}

// scheduleLocked arms the timer for the next attempt and doubles the backoff.
func (r *Reconnector) scheduleLocked() time.Duration {
	d := r.jitter(r.next)
	r.next = min(2*r.next, r.spec.MaxBackoff)
	r.gen++
	gen := r.gen
	r.timer = r.clock.AfterFunc(d, func() { r.fire(gen) })
	return d
}

// jitter spreads d by ±jitterFraction but never beyond MaxBackoff, so the
// configured maximum really is the longest an uplink stays without a try.
func (r *Reconnector) jitter(d time.Duration) time.Duration {
	return jittered(d, r.spec.MaxBackoff, r.rand())
}

// jittered spreads d by ±jitterFraction using u, a uniform number in [0,1),
// capped at limit. Reconnect attempts and publish retries share it.
func jittered(d, limit time.Duration, u float64) time.Duration {
	f := 1 - jitterFraction + 2*jitterFraction*u
	return min(time.Duration(float64(d)*f), limit)
}

func (r *Reconnector) fire(gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stop can lose the race against a firing timer; gen tells us the
	// callback belongs to a timer that was canceled meanwhile.
	if gen != r.gen || r.closed {
		return
	}
	r.timer = nil
	if r.down && !r.running {
		r.startLocked()
	}
}

// attempt runs stop command then command; n is the attempt number within the
// current down period (UPLINKD_ATTEMPT, log field attempt).
func (r *Reconnector) attempt(n int) {
	defer r.wg.Done()
	log := r.log.With("attempt", n)
	env := []string{
		"UPLINKD_EVENT=reconnect",
		"UPLINKD_UPLINK=" + r.spec.Uplink,
		"UPLINKD_IFACE=" + r.spec.Iface,
		"UPLINKD_ATTEMPT=" + strconv.Itoa(n),
	}
	if r.env != nil {
		env = append(env, r.env()...)
	}
	start := time.Now()
	var fields []any
	if len(r.spec.StopCommand) > 0 {
		// The stop command failing is normal (poff: "no pppd is running");
		// it is recorded but does not prevent the start command.
		stop := runCommand(r.ctx, log, r.spec.StopCommand, env, r.spec.Timeout)
		fields = append(fields, stop.attrs("stop_")...)
	}
	var res result
	if r.ctx.Err() != nil {
		res = result{ExitCode: -1, Canceled: true, Err: r.ctx.Err()}
	} else {
		res = runCommand(r.ctx, log, r.spec.Command, env, r.spec.Timeout)
	}
	res.Duration = time.Since(start)
	fields = append(res.attrs(""), fields...)

	r.mu.Lock()
	r.running = false
	// No retry_in on the record means the cycle ended while this attempt
	// ran (the uplink came back, or shutdown).
	if r.down && !r.closed {
		fields = append(fields, slog.Duration("retry_in", r.scheduleLocked()))
	}
	// Logged under the lock so that this record is written before the next
	// attempt can start: the journal shows attempts in order.
	level := slog.LevelInfo
	if res.Outcome() != "ok" {
		level = slog.LevelWarn
	}
	log.Log(context.Background(), level, "reconnect attempt finished", fields...)
	notify := r.onAttempt
	if r.closed {
		notify = nil // shutting down: nobody to tell
	}
	r.mu.Unlock()
	if notify != nil {
		ev := HookEvent{Event: "reconnect", Uplink: r.spec.Uplink, Iface: r.spec.Iface,
			Result: res.Outcome(), Attempt: n}
		if res.Err != nil {
			ev.Reason = res.Err.Error()
		}
		notify(ev)
	}
}
