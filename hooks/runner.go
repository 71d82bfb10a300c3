package hooks

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"
)

// DefaultHookTimeout bounds a user hook whose config sets no timeout, and
// every executable of the hook directory.
const DefaultHookTimeout = 30 * time.Second

// hookQueueSize is how many events may wait per uplink while its hooks run.
// Hooks are notifications of state: when a hook is so slow that this many
// pile up, newer state beats older (see enqueue), and memory stays bounded.
const hookQueueSize = 64

// HookSpec is one [[uplink.hook]]: Command runs on each event named in On.
type HookSpec struct {
	On      []string
	Command []string
	Timeout time.Duration
}

// HookEvent describes what happened; it becomes the UPLINKD_* environment:
// UPLINKD_EVENT, _UPLINK, _IFACE, _OLD_IP, _NEW_IP, _REASON, _RESULT,
// _PUBLISHER and _ATTEMPT (every variable is always set, empty when it does
// not apply, so scripts may use `set -u`).
type HookEvent struct {
	Event, Uplink, Iface, OldIP, NewIP, Reason string
	// Result is the outcome of a `reconnect` attempt (ok | failed | timeout
	// | canceled | error) or of a `publish` (ok | retry | permanent).
	Result string
	// Publisher names the publisher of a `publish` event.
	Publisher string
	// Attempt numbers `reconnect` attempts within one down period.
	Attempt int
	// Family is the address family a health event is about: ipv4 for
	// probe-down/probe-up, ipv6 for probe6-down/probe6-up (docs/ipv6.md);
	// empty for events of the uplink as a whole.
	Family string
}

func (ev HookEvent) env() []string {
	attempt := ""
	if ev.Attempt > 0 {
		attempt = strconv.Itoa(ev.Attempt)
	}
	return []string{
		"UPLINKD_EVENT=" + ev.Event,
		"UPLINKD_UPLINK=" + ev.Uplink,
		"UPLINKD_IFACE=" + ev.Iface,
		"UPLINKD_OLD_IP=" + ev.OldIP,
		"UPLINKD_NEW_IP=" + ev.NewIP,
		"UPLINKD_REASON=" + ev.Reason,
		"UPLINKD_RESULT=" + ev.Result,
		"UPLINKD_PUBLISHER=" + ev.Publisher,
		"UPLINKD_ATTEMPT=" + attempt,
		"UPLINKD_FAMILY=" + ev.Family,
	}
}

// Runner runs user hooks in the background. Events of one uplink are
// delivered one at a time in the order they were fired (so a script sees
// "down" before the following "up"); for each event the matching
// [[uplink.hook]] commands run in config order, then the hook directory's
// executables. Uplinks are independent of each other. Fire never blocks: the
// daemon calls it from its reconcile loop, after the kernel state is set.
type Runner struct {
	log       *slog.Logger
	queueSize int

	mu      sync.Mutex
	closed  bool
	hookDir string
	queues  map[string]*eventQueue // per uplink, each drained by one worker
	stop    chan struct{}          // closed by Close: queued events are dropped
	wg      sync.WaitGroup
}

// hookItem is one fired event with the hooks it matched.
type hookItem struct {
	hooks []HookSpec
	ev    HookEvent
}

// eventQueue is one uplink's bounded queue; guarded by Runner.mu.
type eventQueue struct {
	items []hookItem
	wake  chan struct{} // capacity 1: "items changed"
	// Counted when the queue was full, logged by the worker before it
	// delivers the next event, so that no loss is silent.
	coalesced, dropped int
	// retired: the uplink is gone (Retire); the worker ends once the
	// queue is empty.
	retired bool
}

// NewRunner returns a Runner logging to log (nil: slog.Default()).
func NewRunner(log *slog.Logger) *Runner {
	return newRunner(log, hookQueueSize)
}

func newRunner(log *slog.Logger, queueSize int) *Runner {
	if log == nil {
		log = slog.Default()
	}
	return &Runner{log: log, queueSize: max(queueSize, 1), queues: map[string]*eventQueue{}, stop: make(chan struct{})}
}

// SetHookDir sets the hook directory whose executables run on every event
// ("" for none). The directory is listed and checked again before each event
// (CheckHookDir), so files added later run without a reload.
func (r *Runner) SetHookDir(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hookDir = path
}

// Fire queues ev with the hooks whose On contains ev.Event. When the
// uplink's queue is full, the new event replaces the newest queued one if
// both are of the same kind (the newer state supersedes it), otherwise the
// oldest queued event is dropped; either is counted and logged.
func (r *Runner) Fire(hooks []HookSpec, ev HookEvent) {
	var matched []HookSpec
	for _, h := range hooks {
		if !slices.Contains(h.On, ev.Event) || len(h.Command) == 0 {
			continue
		}
		// Copy the argv: the worker reads it later, maybe after a config
		// reload has reused the caller's slices.
		h.Command = slices.Clone(h.Command)
		h.On = nil
		matched = append(matched, h)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(matched) == 0 && r.hookDir == "" {
		return
	}
	if r.closed {
		r.log.Warn("hook event not delivered: shutting down", "event", ev.Event, "uplink", ev.Uplink, "iface", ev.Iface)
		return
	}
	q := r.queues[ev.Uplink]
	if q == nil {
		q = &eventQueue{wake: make(chan struct{}, 1)}
		r.queues[ev.Uplink] = q
		r.wg.Add(1)
		go r.worker(ev.Uplink, q)
	}
	it := hookItem{hooks: matched, ev: ev}
	switch n := len(q.items); {
	case n < r.queueSize:
		q.items = append(q.items, it)
	case q.items[n-1].ev.Event == ev.Event:
		q.items[n-1] = it
		q.coalesced++
	default:
		q.items = append(q.items[1:], it)
		q.dropped++
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) worker(uplink string, q *eventQueue) {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if r.closed {
			n := len(q.items)
			q.items = nil
			r.mu.Unlock()
			if n > 0 {
				r.log.Warn("hooks not run: shutting down", "uplink", uplink, "dropped", n)
			}
			return
		}
		if len(q.items) == 0 {
			retired := q.retired
			r.mu.Unlock()
			if retired {
				return
			}
			select {
			case <-q.wake:
			case <-r.stop:
			}
			continue
		}
		it := q.items[0]
		q.items = slices.Delete(q.items, 0, 1)
		coalesced, dropped := q.coalesced, q.dropped
		q.coalesced, q.dropped = 0, 0
		dir := r.hookDir
		r.mu.Unlock()
		if coalesced+dropped > 0 {
			r.log.Warn("hook events skipped: hooks too slow, queue full",
				"uplink", uplink, "coalesced", coalesced, "dropped", dropped, "queue", r.queueSize)
		}
		r.deliver(it, dir)
	}
}

// deliver runs the event's config hooks, then the hook directory.
func (r *Runner) deliver(it hookItem, dir string) {
	for _, h := range it.hooks {
		r.run(h.Command, h.Timeout, it.ev)
	}
	if dir == "" {
		return
	}
	hd, err := CheckHookDir(dir)
	if err != nil {
		r.log.Error("hook directory: files refused", "event", it.ev.Event, "uplink", it.ev.Uplink, "reason", err.Error())
	}
	for _, p := range hd.Run {
		r.run([]string{p}, DefaultHookTimeout, it.ev)
	}
}

func (r *Runner) run(argv []string, timeout time.Duration, ev HookEvent) {
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	log := r.log.With("event", ev.Event, "uplink", ev.Uplink, "iface", ev.Iface, "hook", argv[0])
	// Hooks are not canceled by Close: each is bounded by its own timeout,
	// and a notification cut off half-way is worse than a slower shutdown.
	res := runCommand(context.Background(), log, argv, ev.env(), timeout)
	fields := []any{"old_ip", ev.OldIP, "new_ip", ev.NewIP, "reason", ev.Reason}
	if ev.Result != "" {
		fields = append(fields, "event_result", ev.Result)
	}
	fields = append(fields, res.attrs("")...)
	if res.Outcome() == "ok" {
		log.Info("hook finished", fields...)
	} else {
		log.Warn("hook finished", fields...)
	}
}

// Retire ends the worker of an uplink that is gone (a reload removed it):
// hooks already queued still run, in order; it does not wait for them. A
// later Fire for the same name starts a new worker.
func (r *Runner) Retire(uplink string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.queues[uplink]
	if q == nil || r.closed {
		return
	}
	q.retired = true
	delete(r.queues, uplink)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Close stops accepting events, drops queued ones (logged), and waits for the
// running hooks to finish (each bounded by its timeout).
func (r *Runner) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
	}
	r.mu.Unlock()
	r.wg.Wait()
}
