package policy

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// HealthState is where an uplink stands in its health state machine.
type HealthState int

// Health states. Only HealthUp carries traffic.
const (
	// HealthDown: the link layer is not usable (no interface, no carrier or
	// no address). Probes are not judged.
	HealthDown HealthState = iota
	// HealthChecking: the link is usable but probes have not (yet) shown
	// that it works, or a recovered uplink is sitting out its hold-down.
	HealthChecking
	// HealthUp: the uplink carries traffic.
	HealthUp
	// HealthFailed: the link is usable but probes fail.
	HealthFailed
)

func (s HealthState) String() string {
	switch s {
	case HealthDown:
		return "down"
	case HealthChecking:
		return "checking"
	case HealthUp:
		return "up"
	case HealthFailed:
		return "failed"
	}
	return "HealthState(" + strconv.Itoa(int(s)) + ")"
}

// Transition is a state change and its human-readable reason (for the one log
// record per change, docs/design.md). The zero value, like any value with
// From == To, means "no change".
type Transition struct {
	From, To HealthState
	Reason   string
}

// Changed reports whether t is a state change.
func (t Transition) Changed() bool { return t.From != t.To }

const (
	// minHealthWindow is the least number of rounds the loss and latency
	// statistics cover (more when down+up is larger, so that one window
	// always spans a whole failure and recovery).
	minHealthWindow = 10
)

// HealthMachine is the health state machine of one uplink (issue 4): the
// link layer and probe rounds go in, state changes with reasons come out.
//
// It is pure: no goroutines, no clock; every input carries the time, and
// the caller arranges to call Tick at NextDeadline. Every method first
// applies what was due by then (hold-down expiry, silent failure), so a late
// Tick only delays a change, never loses or reorders one.
//
// Rules:
//
//   - Link loss is immediate: Link(false) moves any state to HealthDown and
//     forgets counters, hold-down and statistics.
//   - A round succeeds when at least reliability targets answered, and the
//     sliding-window loss is at most max_loss and the window's average RTT
//     at most max_latency (each when configured). down failed rounds in a
//     row make an Up or Checking uplink HealthFailed.
//   - When no round arrives at all for interval × down (+ timeout, the time
//     a lost probe takes to be reported), the prober is taken to be stuck
//     and the uplink HealthFailed: silence is not health.
//   - Recovery (from HealthFailed, or HealthChecking after the link came
//     back) takes up successful rounds in a row and then hold_down with no
//     failed round; a failed round restarts both. A failed uplink enters
//     HealthChecking when the hold-down starts. So an uplink that flaps
//     faster than up × interval + hold_down never carries traffic again
//     while it flaps.
//   - At daemon start the machine is HealthChecking, and the first
//     Link(true) of a machine that was never Up or Failed goes straight to
//     HealthUp ("assumed up at start"): a restarted daemon must not take
//     the traffic off a working uplink for up × interval + hold_down. Should
//     probes succeed before any link report, up of them suffice (no
//     hold-down: nothing has failed yet).
//
// State and Usable are one fact: Usable() == (State() == HealthUp).
type HealthMachine struct {
	interval, timeout, holdDown time.Duration
	reliability, down, up       int
	targets                     int
	maxLoss                     float64 // < 0: not set
	maxLatency                  time.Duration
	warnLoss                    float64 // < 0: not set
	warnLatency                 time.Duration

	// degraded is the quality level of an Up uplink (Degraded); degBad and
	// degGood count the rounds in a row above and within the warnings.
	degraded        bool
	degradedReason  string
	degBad, degGood int

	state  HealthState
	reason string // of the change into state
	// fresh: never Up or Failed yet, so the first Link(true) assumes Up.
	fresh bool
	// oks and fails count successful and failed rounds in a row.
	oks, fails int
	// holdUntil is when the running hold-down ends; zero when none runs.
	holdUntil time.Time
	// lastRound is the time of the latest round, or of entering a state
	// that expects rounds; the silent-failure deadline counts from it.
	lastRound time.Time

	window []roundSample // ring buffer of the latest rounds
	next   int           // ring position of the next sample
	filled int           // samples in window
}

// roundSample is one probe round in the statistics window.
type roundSample struct {
	sent, answered int
	rttSum         time.Duration
	rttSq          float64 // sum of squared RTTs in ns², for the jitter
	rttMax         time.Duration
	rttN           int
}

// NewHealthMachine returns the machine of an uplink with check c, in state
// HealthChecking. Zero fields of c get the loader's defaults (interval 1s,
// timeout 800ms, reliability 1, down 3, up 3, hold_down 30s; see the
// comment inside on hold_down), so a hand-built Check behaves like a loaded
// one.
func NewHealthMachine(c Check, now time.Time) *HealthMachine {
	h := &HealthMachine{
		interval:    durationOr(c.Interval, DefaultCheckInterval),
		timeout:     durationOr(c.Timeout, DefaultCheckTimeout),
		holdDown:    max(c.HoldDown, 0), // 0s is valid: fail back at once
		reliability: intOr(c.Reliability, DefaultCheckReliability),
		down:        intOr(c.Down, DefaultCheckDown),
		up:          intOr(c.Up, DefaultCheckUp),
		targets:     len(c.Targets),
		maxLoss:     -1,
		maxLatency:  c.MaxLatency,
		warnLoss:    -1,
		warnLatency: c.WarnLatency,
		state:       HealthChecking,
		fresh:       true,
		lastRound:   now,
	}
	// hold_down = "0s" is valid (fail back at once), so zero cannot mean
	// "unset" by itself. The loader always sets interval, though: a Check
	// without one has not been through the loader, and all its zero
	// fields, hold_down included, mean "unset".
	if c.Interval == 0 && c.HoldDown == 0 {
		h.holdDown = DefaultCheckHoldDown
	}
	// Likewise max_loss = 0 is valid (no loss at all), but a hand-built
	// Check's zero means "not set"; 1 or more never fails a round.
	if (c.Interval != 0 || c.MaxLoss > 0) && c.MaxLoss < 1 {
		h.maxLoss = c.MaxLoss
	}
	if c.WarnLossSet() {
		h.warnLoss = c.WarnLoss
	}
	h.window = make([]roundSample, max(minHealthWindow, h.down+h.up))
	return h
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func intOr(i, def int) int {
	if i <= 0 {
		return def
	}
	return i
}

// State is the current state.
func (h *HealthMachine) State() HealthState { return h.state }

// Reason is why the machine entered its current state ("" at start).
func (h *HealthMachine) Reason() string { return h.reason }

// Usable reports whether the uplink may carry traffic: exactly when the
// state is HealthUp.
func (h *HealthMachine) Usable() bool { return h.state == HealthUp }

// Link reports the link layer: usable means the interface is present, has
// carrier and an address. Reporting the same value again changes nothing.
func (h *HealthMachine) Link(usable bool, now time.Time) Transition {
	due := h.Tick(now)
	if !usable {
		if h.state == HealthDown {
			return due
		}
		h.resetProbes()
		return mergeTransitions(due, h.set(HealthDown, "link down: interface, carrier or address missing", now))
	}
	switch {
	case h.fresh && (h.state == HealthChecking || h.state == HealthDown):
		return mergeTransitions(due, h.set(HealthUp, "assumed up at start", now))
	case h.state == HealthDown:
		return mergeTransitions(due, h.set(HealthChecking, fmt.Sprintf(
			"link usable again; waiting for %d good probe rounds in a row and %s hold-down", h.up, h.holdDown), now))
	}
	return due
}

// Round reports one probe round: how many targets answered and the RTTs of
// the answers. Rounds while the link is down are ignored (they can only have
// failed, and say nothing the link state does not).
func (h *HealthMachine) Round(answered int, rtts []time.Duration, now time.Time) Transition {
	return h.RoundLost(answered, h.targets-answered, rtts, now)
}

// RoundLost is Round for a prober with retries (probe.Spec.Retries):
// answered targets (by any of their probes) judge the round, and lost is
// how many targets left the round's first probe unanswered. The window's
// loss counts those, so a lossy line shows its loss although retries kept
// its rounds good, and a dead target counts once per round, as without
// retries.
func (h *HealthMachine) RoundLost(answered, lost int, rtts []time.Duration, now time.Time) Transition {
	due := h.Tick(now)
	if h.state == HealthDown {
		return due
	}
	h.lastRound = now
	answered = max(answered, 0)
	sent := max(h.targets, answered, 1)
	s := roundSample{sent: sent, answered: sent - min(max(lost, 0), sent)}
	for _, r := range rtts {
		s.rttSum += r
		s.rttSq += float64(r) * float64(r)
		s.rttMax = max(s.rttMax, r)
		s.rttN++
	}
	h.window[h.next] = s
	h.next = (h.next + 1) % len(h.window)
	h.filled = min(h.filled+1, len(h.window))

	var tr Transition
	if reason, failed := h.judge(answered); failed {
		tr = h.failed(reason, now)
	} else {
		tr = h.succeeded(now)
	}
	if h.state == HealthUp {
		h.judgeQuality()
	}
	return mergeTransitions(due, tr)
}

// judgeQuality moves an Up uplink between the good and the degraded level
// after the round just recorded: degraded after down rounds in a row whose
// window loss or latency is above warn_loss or warn_latency; good again
// after a whole window of rounds in a row within both. Leaving takes
// longer than entering on purpose (hysteresis): the window still holds
// the bad rounds for a while, and a line that hovers at the threshold
// must not move traffic back and forth every few seconds.
func (h *HealthMachine) judgeQuality() {
	if h.warnLoss < 0 && h.warnLatency <= 0 {
		return
	}
	loss, avg := h.Stats()
	var why string
	switch {
	case h.warnLoss >= 0 && loss > h.warnLoss:
		why = fmt.Sprintf("loss %s > warn_loss %s", lossPercent(loss), lossPercent(h.warnLoss))
	case h.warnLatency > 0 && avg > h.warnLatency:
		why = fmt.Sprintf("latency %s > warn_latency %s", avg.Round(time.Millisecond), h.warnLatency)
	}
	if why != "" {
		h.degGood = 0
		h.degBad++
		if !h.degraded && h.degBad >= h.down {
			h.degraded = true
			h.degradedReason = fmt.Sprintf("%s for %d rounds in a row", why, h.degBad)
		}
		return
	}
	h.degBad = 0
	if !h.degraded {
		return
	}
	h.degGood++
	if h.degGood >= len(h.window) {
		h.degraded = false
		h.degradedReason = fmt.Sprintf("loss and latency within the warnings for %d rounds in a row", h.degGood)
	}
}

// Degraded reports whether the uplink is up at the degraded level: still
// usable, but its loss or latency is above the check's warnings (always
// false without warn_loss and warn_latency, and when not HealthUp).
func (h *HealthMachine) Degraded() bool { return h.degraded }

// DegradedReason is why the quality level last changed ("" when it never
// did, or the uplink left HealthUp since).
func (h *HealthMachine) DegradedReason() string { return h.degradedReason }

// judge applies the success criteria to the round just recorded. A failed
// round's reason is a function of how many rounds in a row have failed.
func (h *HealthMachine) judge(answered int) (reason func(inARow int) string, failed bool) {
	if answered < h.reliability {
		if h.targets <= 1 && h.reliability == 1 {
			return func(n int) string { return fmt.Sprintf("%d probes lost in a row", n) }, true
		}
		return func(n int) string {
			return fmt.Sprintf("%d rounds in a row with fewer than %d of %d targets answering (last: %d)",
				n, h.reliability, max(h.targets, h.reliability), answered)
		}, true
	}
	loss, avg := h.Stats()
	if h.maxLoss >= 0 && loss > h.maxLoss {
		r := fmt.Sprintf("loss %s > %s", lossPercent(loss), lossPercent(h.maxLoss))
		return func(int) string { return r }, true
	}
	if h.maxLatency > 0 && avg > h.maxLatency {
		r := fmt.Sprintf("latency %s > %s", avg.Round(time.Millisecond), h.maxLatency)
		return func(int) string { return r }, true
	}
	return nil, false
}

// ReasonTrafficConfirmed starts the reason of a TrafficConfirmed failure.
const ReasonTrafficConfirmed = "traffic-confirmed"

// TrafficConfirmed fails an Up or Checking uplink at once, without waiting
// for down failed rounds: the traffic trigger saw packets leave with none
// coming back, and a burst of probes to every target confirmed it (issue
// 20). reason is logged and shown as is; it should start with
// "traffic-confirmed". Recovery is the usual one (up good rounds, then
// hold_down).
func (h *HealthMachine) TrafficConfirmed(reason string, now time.Time) Transition {
	due := h.Tick(now)
	if h.state != HealthUp && h.state != HealthChecking {
		return due
	}
	h.oks, h.fails, h.holdUntil = 0, h.down, time.Time{}
	return mergeTransitions(due, h.set(HealthFailed, reason, now))
}

// failed handles a failed round.
func (h *HealthMachine) failed(reason func(int) string, now time.Time) Transition {
	h.oks = 0
	h.holdUntil = time.Time{} // a failure during hold-down restarts recovery
	h.fails++
	if h.state == HealthFailed || h.fails < h.down {
		return Transition{}
	}
	return h.set(HealthFailed, reason(h.fails), now)
}

// succeeded handles a successful round.
func (h *HealthMachine) succeeded(now time.Time) Transition {
	h.fails = 0
	if h.state == HealthUp {
		return Transition{}
	}
	h.oks++
	if h.oks < h.up {
		return Transition{}
	}
	if h.fresh {
		return h.set(HealthUp, fmt.Sprintf("%d probe rounds answered in a row at start", h.oks), now)
	}
	if h.holdUntil.IsZero() {
		if h.holdDown == 0 {
			return h.set(HealthUp, fmt.Sprintf("%d probe rounds answered in a row", h.oks), now)
		}
		h.holdUntil = now.Add(h.holdDown)
		if h.state == HealthFailed {
			return h.set(HealthChecking, fmt.Sprintf(
				"%d probe rounds answered in a row; %s hold-down before taking traffic again", h.oks, h.holdDown), now)
		}
		return Transition{}
	}
	return h.holdExpired(now)
}

// holdExpired moves a Checking uplink whose hold-down has passed to Up.
func (h *HealthMachine) holdExpired(now time.Time) Transition {
	if h.state != HealthChecking || h.holdUntil.IsZero() || now.Before(h.holdUntil) {
		return Transition{}
	}
	h.holdUntil = time.Time{}
	return h.set(HealthUp, fmt.Sprintf("probes answered with no failure during %s hold-down", h.holdDown), now)
}

// Tick applies what is due at now: the silent-failure deadline and the end
// of a hold-down. Call it at NextDeadline (calling it at any other time is
// harmless).
func (h *HealthMachine) Tick(now time.Time) Transition {
	if d := h.silenceDeadline(); !d.IsZero() && !now.Before(d) {
		h.oks, h.fails, h.holdUntil = 0, h.down, time.Time{}
		return h.set(HealthFailed, fmt.Sprintf("no probe results for %s", now.Sub(h.lastRound).Round(time.Millisecond)), now)
	}
	return h.holdExpired(now)
}

// silenceDeadline is when missing rounds count as a failure: a lost probe
// is reported timeout after its round starts, so down lost rounds in a row
// are all reported by interval × down + timeout after the last report.
func (h *HealthMachine) silenceDeadline() time.Time {
	if h.state != HealthUp && h.state != HealthChecking {
		return time.Time{}
	}
	return h.lastRound.Add(time.Duration(h.down)*h.interval + h.timeout)
}

// NextDeadline is when Tick must be called next; zero when nothing is
// pending (HealthDown, HealthFailed).
func (h *HealthMachine) NextDeadline() time.Time {
	d := h.silenceDeadline()
	if h.state == HealthChecking && !h.holdUntil.IsZero() && (d.IsZero() || h.holdUntil.Before(d)) {
		d = h.holdUntil
	}
	return d
}

// Stats is the loss (0..1, over probes) and the average RTT of the answered
// probes in the sliding window of the last max(10, down+up) rounds. Link
// loss empties the window.
func (h *HealthMachine) Stats() (loss float64, avgRTT time.Duration) {
	var sent, answered, n int
	var sum time.Duration
	for i := range h.filled {
		s := h.window[i]
		sent += s.sent
		answered += s.answered
		sum += s.rttSum
		n += s.rttN
	}
	if sent > 0 {
		loss = float64(sent-min(answered, sent)) / float64(sent)
	}
	if n > 0 {
		avgRTT = sum / time.Duration(n)
	}
	return loss, avgRTT
}

// set changes the state. Any state change restarts the silent-failure clock
// (a state that expects rounds waits for them from now on).
func (h *HealthMachine) set(to HealthState, reason string, now time.Time) Transition {
	t := Transition{From: h.state, To: to, Reason: reason}
	h.state, h.reason = to, reason
	h.lastRound = now
	if to == HealthUp || to == HealthFailed {
		h.fresh = false
	}
	if to != HealthChecking {
		h.holdUntil = time.Time{}
	}
	if to == HealthUp {
		h.oks, h.fails = 0, 0
	} else {
		// Only an Up uplink has a quality level; it starts good.
		h.clearQuality()
	}
	return t
}

// resetProbes forgets everything learned from probes over the old link.
func (h *HealthMachine) resetProbes() {
	h.oks, h.fails, h.holdUntil = 0, 0, time.Time{}
	clear(h.window)
	h.next, h.filled = 0, 0
	h.clearQuality()
}

func (h *HealthMachine) clearQuality() {
	h.degraded, h.degradedReason, h.degBad, h.degGood = false, "", 0, 0
}

// CleanMaxRTT is the largest RTT of the last rounds rounds when every
// probe of them answered; ok is false otherwise, and with fewer rounds in
// the window (at most the window's length count). A lost probe may be a
// reply slower than the timeout, so only clean rounds bound how slow the
// line's answers are.
func (h *HealthMachine) CleanMaxRTT(rounds int) (maxRTT time.Duration, ok bool) {
	rounds = max(rounds, 1)
	if rounds > h.filled {
		return 0, false
	}
	for k := 1; k <= rounds; k++ {
		s := h.window[(h.next-k+len(h.window))%len(h.window)]
		if s.answered < s.sent || s.rttN == 0 {
			return 0, false
		}
		maxRTT = max(maxRTT, s.rttMax)
	}
	return maxRTT, true
}

// WindowRounds is how many rounds the window holds now (up to its
// length, max(10, down+up)).
func (h *HealthMachine) WindowRounds() int { return h.filled }

// Jitter is the population standard deviation of the answered probes'
// RTTs in the window (across rounds, so a check with one target has one
// too); ok is false with fewer than two answers.
func (h *HealthMachine) Jitter() (jitter time.Duration, ok bool) {
	var sum, sq float64
	var n int
	for i := range h.filled {
		s := h.window[i]
		sum += float64(s.rttSum)
		sq += s.rttSq
		n += s.rttN
	}
	if n < 2 {
		return 0, false
	}
	mean := sum / float64(n)
	return time.Duration(math.Round(math.Sqrt(max(sq/float64(n)-mean*mean, 0)))), true
}

// mergeTransitions combines a change due before an input with the change the input
// caused, so that the caller still sees one Transition (and one log
// record) per call.
func mergeTransitions(a, b Transition) Transition {
	switch {
	case !b.Changed():
		return a
	case !a.Changed():
		return b
	case a.From == b.To:
		// Back where it started (not reachable with today's rules): a
		// From == To value would read as "no change", so report the last
		// step alone.
		return b
	}
	return Transition{From: a.From, To: b.To, Reason: a.Reason + "; then " + b.Reason}
}

func lossPercent(f float64) string {
	return strconv.FormatFloat(math.Round(f*1000)/10, 'f', -1, 64) + "%"
}
