package hooks

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// DefaultHookTimeout bounds a user hook whose config sets no timeout.
const DefaultHookTimeout = 30 * time.Second

// hookQueueSize is how many hook runs may wait per uplink. Hooks are
// notifications; when a hook is so slow that this many pile up, dropping
// (and saying so) beats unbounded memory or stalling the reconcile loop.
const hookQueueSize = 64

// HookSpec is one [[uplink.hook]]: Command runs on each event named in On.
type HookSpec struct {
	On      []string
	Command []string
	Timeout time.Duration
}

// HookEvent describes what happened; it becomes the UPLINKD_* environment.
type HookEvent struct {
	Event, Uplink, Iface, OldIP, NewIP, Reason string
}

// Runner runs user hooks in the background. Hooks of one uplink run one at a
// time in the order they were fired (so a script sees "down" before the
// following "up"); hooks of different uplinks run concurrently. Fire never
// blocks: the daemon calls it from its reconcile loop, after the kernel state
// is set.
type Runner struct {
	log       *slog.Logger
	queueSize int

	mu     sync.Mutex
	closed bool
	queues map[string]chan hookJob // per uplink, each drained by one worker
	stop   chan struct{}           // closed by Close: queued jobs are dropped
	wg     sync.WaitGroup
}

type hookJob struct {
	hook HookSpec
	ev   HookEvent
}

// NewRunner returns a Runner logging to log (nil: slog.Default()).
func NewRunner(log *slog.Logger) *Runner {
	return newRunner(log, hookQueueSize)
}

func newRunner(log *slog.Logger, queueSize int) *Runner {
	if log == nil {
		log = slog.Default()
	}
	return &Runner{log: log, queueSize: queueSize, queues: map[string]chan hookJob{}, stop: make(chan struct{})}
}

// Fire queues, in order, each hook whose On contains ev.Event. When the
// uplink's queue is full the hook is dropped and a warning logged.
func (r *Runner) Fire(hooks []HookSpec, ev HookEvent) {
	for _, h := range hooks {
		if !slices.Contains(h.On, ev.Event) || len(h.Command) == 0 {
			continue
		}
		// Copy the argv: the worker reads it later, maybe after a config
		// reload has reused the caller's slices.
		h.Command = slices.Clone(h.Command)
		r.enqueue(hookJob{hook: h, ev: ev})
	}
}

func (r *Runner) enqueue(j hookJob) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.log.Warn("hook not run: shutting down", hookAttrs(j)...)
		return
	}
	q := r.queues[j.ev.Uplink]
	if q == nil {
		q = make(chan hookJob, r.queueSize)
		r.queues[j.ev.Uplink] = q
		r.wg.Add(1)
		go r.worker(j.ev.Uplink, q)
	}
	// The send happens under r.mu, so Close cannot close q in between.
	select {
	case q <- j:
	default:
		r.log.Warn("hook queue full, hook dropped", append(hookAttrs(j), "queue", r.queueSize)...)
	}
}

func (r *Runner) worker(uplink string, q chan hookJob) {
	defer r.wg.Done()
	dropped := 0
	for j := range q {
		select {
		case <-r.stop:
			dropped++
			continue
		default:
		}
		r.run(j)
	}
	if dropped > 0 {
		r.log.Warn("hooks not run: shutting down", "uplink", uplink, "dropped", dropped)
	}
}

func (r *Runner) run(j hookJob) {
	ev := j.ev
	timeout := j.hook.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	log := r.log.With("event", ev.Event, "uplink", ev.Uplink, "iface", ev.Iface, "hook", j.hook.Command[0])
	env := []string{
		"UPLINKD_EVENT=" + ev.Event,
		"UPLINKD_UPLINK=" + ev.Uplink,
		"UPLINKD_IFACE=" + ev.Iface,
		"UPLINKD_OLD_IP=" + ev.OldIP,
		"UPLINKD_NEW_IP=" + ev.NewIP,
		"UPLINKD_REASON=" + ev.Reason,
	}
	// Hooks are not canceled by Close: each is bounded by its own timeout,
	// and a notification cut off half-way is worse than a slower shutdown.
	res := runCommand(context.Background(), log, j.hook.Command, env, timeout)
	fields := append([]any{"old_ip", ev.OldIP, "new_ip", ev.NewIP, "reason", ev.Reason}, res.attrs("")...)
	if res.Outcome() == "ok" {
		log.Info("hook finished", fields...)
	} else {
		log.Warn("hook finished", fields...)
	}
}

func hookAttrs(j hookJob) []any {
	return []any{"event", j.ev.Event, "uplink", j.ev.Uplink, "iface", j.ev.Iface, "hook", j.hook.Command[0]}
}

// Retire ends the worker of an uplink that is gone (a reload removed it):
// hooks already queued still run, in order; it does not wait for them. A
// later Fire for the same name starts a new worker.
func (r *Runner) Retire(uplink string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.queues[uplink]; q != nil && !r.closed {
		close(q)
		delete(r.queues, uplink)
	}
}

// Close stops accepting hooks, drops queued ones (logged), and waits for the
// running ones to finish (each bounded by its timeout).
func (r *Runner) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.stop)
		for _, q := range r.queues {
			close(q)
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
}
