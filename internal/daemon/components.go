package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// The pieces around the reconcile loop, each behind one small interface and
// started and stopped in order by the supervisor (docs/design.md draws
// them). A component's goroutines are in Daemon.wg, so Run's exit waits for
// them; what a component tells the loop arrives on a channel of its own,
// which Run's select hands to the component's owner in the loop.

// component is one piece around the loop.
type component interface {
	// start starts the component's goroutines; ctx ends when Run does.
	start(ctx context.Context) error
	// stop ends what the end of ctx does not, and waits for it. It is
	// called once, after ctx ended, in the reverse order of start.
	stop()
	// reload follows a config the loop switched to.
	reload(cfg *policy.Config)
	// afterPass publishes what a pass found, in the order of start.
	afterPass(res SyncResult)
}

// quiet is the no-op part of a component, for those that need only some of
// the methods.
type quiet struct{}

func (quiet) start(context.Context) error { return nil }
func (quiet) stop()                       {}
func (quiet) reload(*policy.Config)       {}
func (quiet) afterPass(SyncResult)        {}

// funcs is a component made of the Daemon's methods that own one piece of
// state (DHCP, router advertisements, publishers, ...); nil ones do nothing.
type funcs struct {
	onStart  func(ctx context.Context) error
	onStop   func()
	onReload func(cfg *policy.Config)
	onPass   func(res SyncResult)
}

func (c funcs) start(ctx context.Context) error {
	if c.onStart == nil {
		return nil
	}
	return c.onStart(ctx)
}

func (c funcs) stop() {
	if c.onStop != nil {
		c.onStop()
	}
}

func (c funcs) reload(cfg *policy.Config) {
	if c.onReload != nil {
		c.onReload(cfg)
	}
}

func (c funcs) afterPass(res SyncResult) {
	if c.onPass != nil {
		c.onPass(res)
	}
}

// supervisor starts components in order and stops the started ones in the
// reverse order. It is used from the loop's goroutine only.
type supervisor struct {
	started []component
}

// start starts cs in order; on an error it stops those it started.
func (s *supervisor) start(ctx context.Context, cs ...component) error {
	for _, c := range cs {
		if err := c.start(ctx); err != nil {
			s.stop()
			return err
		}
		s.started = append(s.started, c)
	}
	return nil
}

// stop stops the started components, last first; more calls do nothing.
func (s *supervisor) stop() {
	for i := len(s.started) - 1; i >= 0; i-- {
		s.started[i].stop()
	}
	s.started = nil
}

func (s *supervisor) reload(cfg *policy.Config) {
	for _, c := range s.started {
		c.reload(cfg)
	}
}

func (s *supervisor) afterPass(res SyncResult) {
	for _, c := range s.started {
		c.afterPass(res)
	}
}

// inputs are the components whose output Run's select reads.
type inputs struct {
	events  *eventSource
	fw      *firewallWatch
	systemd *systemd
	hup     *sighup
}

// components lists, in start order, everything Run starts around the loop.
// HA is not among them: its state is the loop's (ha.go), its input is
// ha.wake(), and its track file says "stopped" only at the very end of
// shutdown, once the flush and the closing of the handles are done.
// Router advertisements come before the status: a withdrawal must not wait
// for anything else a pass publishes; the status before the publishers,
// which read it.
func (d *Daemon) components(in inputs) []component {
	return []component{
		d.svc,                          // [[service]] backend checks (services.go); output: svc.changed
		funcs{onStart: d.startMetrics}, // metrics.go; ends with ctx
		funcs{ // router advertisements (radv.go)
			onStart:  func(ctx context.Context) error { d.startRadv(ctx, d.cfg); return nil },
			onStop:   d.stopRadv,
			onReload: func(cfg *policy.Config) { d.reloadRadv(d.runCtx, cfg) },
			onPass:   func(res SyncResult) { d.passRadv(res.Desired.Uplinks, res.End) },
		},
		funcs{ // the control socket and its status snapshot (control.go); output: x.ctl
			onStart: d.serveControl,
			onPass:  func(SyncResult) { d.publishStatus() },
		},
		funcs{ // address publishers (publish.go)
			onStart:  func(context.Context) error { d.startPublishing(d.cfg); return nil },
			onStop:   d.stopPublishing,
			onReload: d.reloadPublishing,
			onPass:   func(SyncResult) { d.publishAddresses() },
		},
		funcs{ // the LAN DHCP server (dhcp.go)
			onStart:  func(ctx context.Context) error { d.startDHCP(ctx, d.cfg); return nil },
			onStop:   d.stopDHCP,
			onReload: func(cfg *policy.Config) { d.reloadDHCP(d.runCtx, cfg) },
			onPass:   func(SyncResult) { d.passDHCP() },
		},
		funcs{onStart: d.watchConfigFile}, // reloadwatch.go; output: reload
		in.events, in.fw, in.systemd, in.hup,
	}
}

func (d *Daemon) newInputs() inputs {
	return inputs{
		events:  &eventSource{d: d, out: make(chan watcher.Event, 256), errs: make(chan error, 1)},
		fw:      &firewallWatch{d: d, damaged: make(chan struct{}, 1), poll: newLoopTimer(d.clock)},
		systemd: &systemd{notify: d.deps.Notify, every: d.deps.Watchdog, clock: d.clock, timer: newLoopTimer(d.clock)},
		hup:     &sighup{on: d.opts.Signals},
	}
}

// eventSource runs the kernel's change events (Deps.Events) into out; its
// end is a failure unless Run is ending.
type eventSource struct {
	quiet
	d    *Daemon
	out  chan watcher.Event
	errs chan error
}

func (e *eventSource) start(ctx context.Context) error {
	e.d.wg.Go(func() { e.errs <- e.d.deps.Events.Run(ctx, e.out) })
	return nil
}

// ended is Run's answer to the end of the event source.
func (e *eventSource) ended(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("watcher: %w", err)
}

// firewallWatch notices damage to the netfilter state uplinkd owns:
// nftables tells (its monitor sends on damaged); iptables has no events, so
// its cheap Check runs every Deps.FirewallPoll (poll).
type firewallWatch struct {
	quiet
	d       *Daemon
	damaged chan struct{}
	poll    *loopTimer
}

func (f *firewallWatch) start(ctx context.Context) error {
	d := f.d
	if m := d.deps.FirewallMonitor; m != nil {
		d.wg.Go(func() {
			if err := m.Watch(ctx, f.damaged); err != nil {
				d.log.Warn("firewall monitor unavailable; firewall repair only on the next pass", "reason", err.Error())
			}
		})
	} else if d.deps.FirewallPoll > 0 {
		f.poll.resetAt(d.clock.Now().Add(d.deps.FirewallPoll))
	}
	return nil
}

func (f *firewallWatch) stop() { f.poll.stop() }

// polled re-arms the poll for the next Check.
func (f *firewallWatch) polled() { f.poll.resetAt(f.d.clock.Now().Add(f.d.deps.FirewallPoll)) }

// systemd owns what the loop tells systemd: READY=1 after the first pass
// that succeeded and after every reload, RELOADING=1 before it, and, under
// WatchdogSec, WATCHDOG=1 every half period from the loop itself, so a pass
// that hangs stops the pings and systemd restarts the daemon.
type systemd struct {
	quiet
	notify func(string)
	every  time.Duration // the watchdog period; 0: none
	clock  Clock
	timer  *loopTimer
	ready  bool
}

func (s *systemd) start(context.Context) error {
	if s.every > 0 {
		s.timer.resetAt(s.clock.Now().Add(s.every / 2))
	}
	return nil
}

func (s *systemd) stop() { s.timer.stop() }

// ping sends WATCHDOG=1 and re-arms from the tick, not from now: a late
// ping does not delay the next one.
func (s *systemd) ping(at time.Time) {
	s.notify("WATCHDOG=1")
	s.timer.resetAt(at.Add(s.every / 2))
}

// passed sends READY=1 after the first pass that succeeded.
func (s *systemd) passed(res SyncResult) {
	if !s.ready && res.Err == nil {
		s.ready = true
		s.notify("READY=1")
	}
}

// reloading and reloaded frame a reload once the daemon is ready.
func (s *systemd) reloading() {
	if s.ready {
		s.notify(reloadingState())
	}
}

func (s *systemd) reloaded() {
	if s.ready {
		s.notify("READY=1")
	}
}

// sighup delivers SIGHUP (Options.Signals); a nil channel otherwise.
type sighup struct {
	quiet
	on bool
	c  chan os.Signal
}

func (h *sighup) start(context.Context) error {
	if h.on {
		h.c = make(chan os.Signal, 1)
		signal.Notify(h.c, syscall.SIGHUP)
	}
	return nil
}

func (h *sighup) stop() {
	if h.c != nil {
		signal.Stop(h.c)
	}
}
