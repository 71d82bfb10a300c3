package hooks

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/uplinkd/uplinkd/internal/backoff"
)

// Defaults when a ReconnectSpec leaves a duration zero; they match the
// config loader's defaults (docs/design.md).
const (
	DefaultBackoff     = 5 * time.Second
	DefaultMaxBackoff  = 5 * time.Minute
	DefaultTimeout     = 30 * time.Second
	DefaultDialTimeout = 30 * time.Second
)

// JitterFraction spreads retries ±20% (reconnects here, publish retries in
// package publish) so that uplinks which went down together
// (a shared DSLAM, a power cut) do not redial in lockstep.
const JitterFraction = 0.2

// ReconnectSpec is what one uplink's Reconnector runs.
type ReconnectSpec struct {
	Uplink, Iface, Kind  string   // Kind: ppp | wlan | ethernet
	Command, StopCommand []string // resolved argv (see DefaultCommands)
	// Peer is the pppd peer (kind ppp): a pppd running `call Peer`, or the
	// one whose pid file names Iface, owns the line (see Reconnector).
	Peer string
	// Backoff is the delay after the first attempt; it doubles after each
	// further attempt up to MaxBackoff. Timeout bounds each command.
	Backoff, MaxBackoff, Timeout time.Duration
	// DialTimeout (kind ppp) is how long a dial gets to bring the link up
	// before the next attempt: pon returns at once, pppd negotiates for
	// seconds. Default DefaultDialTimeout.
	DialTimeout time.Duration
}

// Need is what the daemon asks of a Reconnector.
type Need int

const (
	// NeedNone: the uplink works (or has its address): nothing to do, every
	// pending attempt is canceled.
	NeedNone Need = iota
	// NeedDial: the link is gone or has no address. A ppp uplink whose pppd
	// is alive (persist redialling, or a dial in progress) is left to it.
	NeedDial
	// NeedRestart: the link is up but has been failing its probes for
	// reconnect_after. Only this stops a live pppd (stop command, then
	// command): its session is up but carries nothing.
	NeedRestart
)

func (n Need) String() string {
	return [...]string{"none", "dial", "restart"}[n]
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
// uplink needs it: at once, then with exponential backoff and jitter. It never
// runs two attempts at the same time. All methods are safe for concurrent use.
//
// A command exiting 0 does not end the cycle (pon returns before the link is
// up); only Set(NeedNone) (Down(false)) does.
//
// For kind ppp it never stops a pppd that is alive for the peer, nor a dial
// in progress: every attempt first looks for one (a process `pppd ... call
// PEER`, or the pid in /run/IFACE.pid). While one lives, NeedDial does
// nothing but look again after the backoff (a `persist` pppd redials by
// itself; killing it half-way through a negotiation is what made dials
// fail). Only NeedRestart, a link that is up but has failed its probes for
// reconnect_after, runs the stop command (poff) before the command (pon);
// without a live pppd an attempt runs the command alone. A command that
// started a dial (exit 0), or an attempt that found a live pppd, opens a
// dial window: the next attempt waits until the uplink comes up (Set
// NeedNone, which also resets the backoff), the window's pppd exits (then
// the backoff) or DialTimeout (a dial) or the backoff (a found pppd) has
// passed. After a command that failed, the backoff. Backoff is thus only
// between failed attempts: a reconnect that worked delays nothing.
//
// A Reconnector built for a reloaded config Adopts the old one, so that a
// reload never runs two attempts at once either.
//
// Commands run in a session of their own, so the pppd they start does not
// belong to the daemon: it survives a daemon restart when the service
// manager kills only the main process (systemd KillMode=process). A command
// still running when the daemon exits (Kill) is killed; pppd itself has
// detached by then unless the peer says nodetach.
type Reconnector struct {
	spec  ReconnectSpec
	log   *slog.Logger
	clock Clock
	env   func() []string
	rand  func() float64 // [0,1); replaceable so tests can pin the jitter
	procs procTable      // where live pppds are looked for

	// ctx is canceled by Close after the grace period, which kills a running
	// attempt's process group.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	onAttempt func(HookEvent)
	need      Need
	running   bool
	closed    bool
	timer     Timer           // the scheduled next attempt, if any
	gen       uint64          // identifies the live timer; a stale callback sees a mismatch
	retry     backoff.Backoff // the delay of the next scheduled attempt
	attempts  int             // started in total, including those that found pppd alive
	cycle     int             // started since the uplink last came back
	started   time.Time       // when the running attempt started (status: dialling since)
	timerAt   time.Time       // when the scheduled attempt fires

	// The dial window (kind ppp) of the last attempt: it started a dial
	// (its command exited 0) or found a live pppd. It ends when the
	// uplink comes up (Set(NeedNone)), when that pppd exits (the next
	// attempt then comes exitDelay later, the backoff) or when the
	// scheduled attempt fires (DialTimeout after the dial at the latest).
	inWindow    bool
	windowSince time.Time          // when the window's dial was started (zero: it found a pppd)
	pppdPID     int                // the pppd the window waits for; 0: none seen yet
	watchStop   context.CancelFunc // ends the window's pppd watch
	exitDelay   time.Duration

	// Reloads (Adopt): an attempt of a predecessor still runs; r starts
	// none of its own until that attempt hands its result over.
	waiting  bool
	heir     *Reconnector  // this (closed) Reconnector's attempt belongs to heir
	pollPPPD time.Duration // how often the window looks at its pppd
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
	if spec.DialTimeout <= 0 {
		spec.DialTimeout = DefaultDialTimeout
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
		procs:  procTable{proc: "/proc", run: "/run"},
		ctx:    ctx,
		cancel: cancel,
		retry:  backoff.New(spec.Backoff, spec.MaxBackoff),
	}
}

// Down is Set(NeedDial) or Set(NeedNone).
func (r *Reconnector) Down(down bool) {
	if down {
		r.Set(NeedDial)
	} else {
		r.Set(NeedNone)
	}
}

// Set tells the Reconnector what the uplink needs; the caller decides when
// (interface gone, no carrier, failed for reconnect_after) and may repeat
// itself freely.
//
// A need starts an attempt at once unless one is running or scheduled;
// while the need lasts, each finished attempt schedules the next after the
// current backoff. NeedNone cancels the scheduled attempt, ends the dial
// window and resets the backoff: a dial that succeeded holds back nothing,
// so a link that goes away later is dialled again at once. A running
// attempt is left to finish (killing pon half-way helps nobody) but runs no
// further command.
func (r *Reconnector) Set(need Need) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if need == NeedNone {
		if r.need != NeedNone && r.cycle > 0 {
			r.log.Debug("uplink back, reconnect cycle ends", "attempts", r.cycle)
		}
		r.need = NeedNone
		r.stopTimerLocked()
		r.closeWindowLocked()
		r.retry.Reset()
		r.cycle = 0
		return
	}
	r.need = need
	if len(r.spec.Command) == 0 || r.running || r.waiting || r.timer != nil {
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

// Reconnect states (ReconnectState.State).
const (
	ReconnectIdle     = "idle"     // nothing needed, or nothing to run
	ReconnectDialling = "dialling" // a command runs, or its dial has not come up yet
	ReconnectPPPD     = "pppd"     // a pppd for the peer lives: the dial is left to it
	ReconnectBackoff  = "backoff"  // the next attempt waits for the backoff
	ReconnectWaiting  = "takeover" // a reload: the previous config's attempt still runs
)

// ReconnectState is what a Reconnector is doing, for `uplinkd status`.
type ReconnectState struct {
	State string
	Since time.Time // dialling: when the attempt or its dial started
	PID   int       // pppd: the pppd waited for
	Until time.Time // dialling, pppd, backoff: when the next attempt is due (zero: none scheduled)
}

// State returns what r is doing now.
func (r *Reconnector) State() ReconnectState {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st ReconnectState
	if r.timer != nil {
		st.Until = r.timerAt
	}
	switch {
	case r.running:
		st.State, st.Since = ReconnectDialling, r.started
	case r.waiting:
		st.State, st.Since = ReconnectWaiting, r.started
	case r.need == NeedNone || r.closed:
		return ReconnectState{State: ReconnectIdle}
	case r.inWindow && r.pppdPID > 0:
		st.State, st.PID = ReconnectPPPD, r.pppdPID
	case r.inWindow:
		st.State, st.Since = ReconnectDialling, r.windowSince
	case r.timer != nil:
		st.State = ReconnectBackoff
	default:
		st.State = ReconnectIdle
	}
	return st
}

// Adopt makes r, a Reconnector built for a reloaded config, carry on where
// old left off, so that a reload never makes two dials at once: old is
// closed for good (it schedules nothing more); an attempt of old that still
// runs becomes r's (r starts none until it ends, then schedules the next
// from its result); old's scheduled attempt, backoff and dial window carry
// over. Call it once, before the first Set; the caller still Closes old.
func (r *Reconnector) Adopt(old *Reconnector) {
	if old == nil || old == r {
		return
	}
	old.mu.Lock()
	old.closed = true
	running := old.running || old.waiting
	if running {
		old.heir = r
	}
	timerAt, scheduled := old.timerAt, old.timer != nil
	old.stopTimerLocked()
	inWindow, since, pid, exitDelay := old.inWindow, old.windowSince, old.pppdPID, old.exitDelay
	old.closeWindowLocked()
	need, next, cycle, started := old.need, old.retry.Peek(), old.cycle, old.started
	old.mu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.need, r.cycle, r.started = need, cycle, started
	r.retry.Set(next)
	if running {
		r.waiting = true
		return
	}
	if scheduled {
		r.armLocked(max(timerAt.Sub(r.clock.Now()), 0))
		if inWindow {
			r.exitDelay = exitDelay
			r.openWindowLocked(pid, since)
		}
	}
}

// handOver gives the result of an attempt that a reload moved to r (see
// Adopt): r schedules the next attempt as if the attempt had been its own.
func (r *Reconnector) handOver(dialed time.Time, pid int) {
	r.mu.Lock()
	if r.closed && r.heir != nil {
		heir := r.heir
		r.mu.Unlock()
		heir.handOver(dialed, pid)
		return
	}
	defer r.mu.Unlock()
	r.waiting = false
	if r.closed || r.need == NeedNone {
		return
	}
	r.afterAttemptLocked(dialed, pid)
}

// Kill stops scheduling and kills a running attempt's command at once; it
// does not wait (Close does). The daemon calls it on exit.
func (r *Reconnector) Kill() {
	r.mu.Lock()
	r.closed = true
	r.stopTimerLocked()
	r.closeWindowLocked()
	r.mu.Unlock()
	r.cancel()
}

// Closed reports whether Close or Kill was called and no attempt runs.
func (r *Reconnector) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed && !r.running
}

// Close stops scheduling and waits for a running attempt; if it is not done
// within the spec's Timeout its process group is killed. Down has no effect
// afterwards.
func (r *Reconnector) Close() {
	r.mu.Lock()
	r.closed = true
	r.stopTimerLocked()
	r.closeWindowLocked()
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
	r.timerAt = time.Time{}
	r.gen++
}

func (r *Reconnector) startLocked() {
	r.stopTimerLocked()
	r.closeWindowLocked()
	r.attempts++
	r.cycle++
	r.running = true
	r.started = r.clock.Now()
	r.wg.Add(1)
	go r.attempt(r.cycle)
}

// afterAttemptLocked schedules the next attempt once one has ended while
// the need lasts. dialed is when the attempt started a dial (its command
// exited 0; zero: it did not), pid a pppd it started or found (0: none): kind
// ppp then opens the dial window, which the next attempt ends.
func (r *Reconnector) afterAttemptLocked(dialed time.Time, pid int) time.Duration {
	d := r.scheduleLocked(dialed)
	if r.spec.Kind == "ppp" && (!dialed.IsZero() || pid > 0) {
		r.openWindowLocked(pid, dialed)
	}
	return d
}

// scheduleLocked arms the timer for the next attempt and doubles the backoff.
// A dial the last attempt started (its command exited 0) gets DialTimeout to
// bring the link up first (the dial window may end sooner: see
// openWindowLocked).
func (r *Reconnector) scheduleLocked(dialed time.Time) time.Duration {
	d := r.jitter(r.retry.Next())
	r.exitDelay = d
	if r.spec.Kind == "ppp" && !dialed.IsZero() {
		d = max(d, dialed.Add(r.spec.DialTimeout).Sub(r.clock.Now()))
	}
	r.armLocked(d)
	return d
}

func (r *Reconnector) armLocked(d time.Duration) {
	r.stopTimerLocked()
	gen := r.gen
	r.timerAt = r.clock.Now().Add(d)
	r.timer = r.clock.AfterFunc(d, func() { r.fire(gen) })
}

// openWindowLocked watches, until the window closes, for the pppd of the
// window (pid, or the one for the peer that shows up when pid is 0): when
// it exits, the dial it made is over and the scheduled attempt is moved
// forward to exitDelay from then. A pppd that redials (persist) does not
// exit, so it keeps its job until the scheduled attempt looks again.
func (r *Reconnector) openWindowLocked(pid int, since time.Time) {
	r.closeWindowLocked()
	ctx, cancel := context.WithCancel(r.ctx)
	r.inWindow, r.windowSince, r.pppdPID, r.watchStop = true, since, pid, cancel
	gen := r.gen
	poll := r.pollPPPD
	if poll <= 0 {
		poll = defaultPollPPPD
	}
	r.wg.Add(1)
	go r.watchPPPD(ctx, gen, pid, poll)
}

// defaultPollPPPD is how often a dial window looks at its pppd: a read of
// one /proc file, only while a dial is under way.
const defaultPollPPPD = 200 * time.Millisecond

func (r *Reconnector) closeWindowLocked() {
	if r.watchStop != nil {
		r.watchStop()
		r.watchStop = nil
	}
	r.inWindow, r.windowSince, r.pppdPID = false, time.Time{}, 0
}

func (r *Reconnector) watchPPPD(ctx context.Context, gen uint64, pid int, poll time.Duration) {
	defer r.wg.Done()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if pid == 0 {
			if p, ok := r.procs.pppd(r.spec.Peer, r.spec.Iface); ok {
				pid = p
				r.mu.Lock()
				if gen == r.gen && r.inWindow {
					r.pppdPID = p
				}
				r.mu.Unlock()
			}
		} else if !r.procs.isPPPD(pid) {
			r.pppdExited(gen, pid)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pppdExited ends the dial window of generation gen: the next attempt comes
// after the backoff from now, unless it was due sooner anyway.
func (r *Reconnector) pppdExited(gen uint64, pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gen != r.gen || r.closed || r.running || r.timer == nil || !r.inWindow {
		return
	}
	r.closeWindowLocked() // cancels this goroutine's own watch: it returns now
	d := r.exitDelay
	if at := r.clock.Now().Add(d); at.Before(r.timerAt) {
		r.armLocked(d)
	} else {
		d = r.timerAt.Sub(r.clock.Now())
	}
	r.log.Info("pppd exited; the dial window ends", "pid", pid, slog.Duration("retry_in", d))
}

// jitter spreads d by ±JitterFraction but never beyond MaxBackoff, so the
// configured maximum really is the longest an uplink stays without a try.
func (r *Reconnector) jitter(d time.Duration) time.Duration {
	return backoff.Jitter(d, r.spec.MaxBackoff, JitterFraction, r.rand())
}

func (r *Reconnector) fire(gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stop can lose the race against a firing timer; gen tells us the
	// callback belongs to a timer that was canceled meanwhile.
	if gen != r.gen || r.closed {
		return
	}
	r.timer, r.timerAt = nil, time.Time{}
	if r.need != NeedNone && !r.running && !r.waiting {
		r.startLocked()
	}
}

// attempt runs the stop command (if this attempt needs it) then the
// command; n is the attempt number within the current down period
// (UPLINKD_ATTEMPT, log field attempt).
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
	stop, run, pid := r.plan(log)
	if stop && r.still() {
		// The stop command failing is normal (poff: "no pppd is running");
		// it is recorded but does not prevent the start command.
		res := runCommand(r.ctx, log, r.spec.StopCommand, env, r.spec.Timeout, ownSession)
		fields = append(fields, res.attrs("stop_")...)
	}
	var res CommandResult
	var dialed time.Time
	switch {
	case !run:
	case r.ctx.Err() != nil:
		res = CommandResult{ExitCode: -1, Canceled: true, Err: r.ctx.Err()}
	case !r.still():
		run = false // the link came back meanwhile
	default:
		at := r.clock.Now()
		res = runCommand(r.ctx, log, r.spec.Command, env, r.spec.Timeout, ownSession)
		// Only a command that succeeded started a dial worth waiting for;
		// one that failed gets the plain backoff.
		pid = 0
		if res.Outcome() == "ok" {
			dialed = at
			if r.spec.Kind == "ppp" {
				pid, _ = r.procs.pppd(r.spec.Peer, r.spec.Iface)
			}
		}
	}
	res.Duration = time.Since(start)
	if run {
		fields = append(res.attrs(""), fields...)
	}

	r.mu.Lock()
	r.running = false
	heir := r.heir
	// No retry_in on the record means the cycle ended while this attempt
	// ran (the uplink came back, or shutdown).
	if r.need != NeedNone && !r.closed {
		fields = append(fields, slog.Duration("retry_in", r.afterAttemptLocked(dialed, pid)))
	}
	if !run {
		r.mu.Unlock()
		if heir != nil {
			heir.handOver(dialed, pid)
		}
		return // plan or still() logged why
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
	if heir != nil {
		// A reload moved this attempt to heir: it schedules the next one
		// and its owner hears of this one.
		heir.handOver(dialed, pid)
		heir.mu.Lock()
		notify = heir.onAttempt
		heir.mu.Unlock()
	}
	if notify != nil {
		ev := HookEvent{Event: "reconnect", Uplink: r.spec.Uplink, Iface: r.spec.Iface,
			Result: res.Outcome(), Attempt: n}
		if res.Err != nil {
			ev.Reason = res.Err.Error()
		}
		notify(ev)
	}
}

// still reports whether the uplink still needs the attempt (Close lets a
// started attempt finish; Kill cancels it through ctx).
func (r *Reconnector) still() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.need != NeedNone
}

// plan decides what this attempt runs. Other kinds: the stop command (if
// any), then the command. Kind ppp: nothing while a pppd for the peer is
// alive (pid), unless the link is up and failing (NeedRestart): then the
// stop command and the command; without a live pppd the command alone.
func (r *Reconnector) plan(log *slog.Logger) (stop, run bool, pid int) {
	if r.spec.Kind != "ppp" {
		return len(r.spec.StopCommand) > 0, true, 0
	}
	r.mu.Lock()
	need := r.need
	r.mu.Unlock()
	pid, alive := r.procs.pppd(r.spec.Peer, r.spec.Iface)
	switch {
	case !alive:
		return false, true, 0
	case need == NeedRestart:
		log.Info("link up but failing; stopping its pppd and dialling again", "pid", pid, "reason", "probes failing")
		return len(r.spec.StopCommand) > 0, true, 0
	default:
		log.Debug("pppd alive for the peer; leaving the dial to it", "pid", pid, "peer", r.spec.Peer)
		return false, false, pid
	}
}
