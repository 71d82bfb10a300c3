// Package daemon wires uplinkd together: the watcher's netlink triggers feed
// one reconcile loop that snapshots the kernel, computes the whole desired
// state (policy.Compute), diffs it and applies only the difference — the
// kube-proxy proxier shape, driven by events instead of a sync period. The
// loop reaches the kernel, the firewall, its events and time only through
// the interfaces in deps.go, so its tests run on fakes as any user.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// Options configure one daemon instance.
type Options struct {
	ConfigPath string
	// NetNS is the namespace Open manages and the probers run in; -1 (or
	// 0) means the process's own. Lab tests run the daemon in-process in a
	// lab namespace.
	NetNS  netns.NsHandle
	Logger *slog.Logger
	// OnSync, if set, is called after every reconcile pass (tests, benchmarks).
	OnSync func(SyncResult)
	// Signals enables SIGHUP reload (the real daemon; tests call Reload).
	Signals bool
	// WatchConfig reloads when the config file changes (fsnotify on its
	// directory; reloadwatch.go).
	WatchConfig bool
	// ControlSocket, if set, replaces [daemon] control_socket (lab tests
	// use a temporary path); "-" runs without a control socket.
	ControlSocket string
	// StateDir, if set, replaces [daemon] state_dir, at start and on every
	// reload: tests use a temporary directory so that they never read or
	// write the host's /var/lib/uplinkd.
	StateDir string
	// FlushOnExit removes every rule, route and firewall object uplinkd
	// owns when Run returns after a clean stop (uplinkd run --flush-on-exit).
	FlushOnExit bool
	// Version is reported in the status and to publishers.
	Version string
	// MetricsListener, if set, serves the metrics instead of a listener
	// on [daemon] metrics_listen (tests listen on 127.0.0.1:0).
	MetricsListener net.Listener
}

// overrideStateDir applies Options.StateDir to a config the daemon is about
// to use.
func (o Options) overrideStateDir(cfg *policy.Config) {
	if o.StateDir != "" {
		cfg.Daemon.StateDir = o.StateDir
	}
}

// SyncResult describes one reconcile pass.
type SyncResult struct {
	// Trigger is when the first event of the coalesced batch was read.
	Trigger time.Time
	Start   time.Time
	End     time.Time
	Changes []policy.Change
	Desired policy.Desired
	Err     error
	// Deferred is set when the pass found repairs but the repair rate limit
	// held them back; a later pass applies them.
	Deferred bool
	// Repaired: the pass put back state someone else had changed.
	Repaired bool
	// FirewallChanged: the pass rewrote (part of) the netfilter state.
	FirewallChanged bool
}

// Daemon is the running reconcile loop.
type Daemon struct {
	opts   Options
	log    *slog.Logger
	deps   Deps
	clock  Clock
	kernel Kernel
	fw     Firewall
	cfg    *policy.Config

	reload chan reloadReq

	// lastApplied holds the keys of what the previous successful pass made
	// true, to tell a repair (someone removed our object) from a change.
	lastApplied map[string]string
	lastStates  map[string]policy.UplinkState
	conflicts   map[string]bool
	// sched decides when passes run (scheduler.go).
	sched *scheduler

	// linkSeq: the link history record the last pass's snapshot included;
	// the next pass reads what happened after it (kernelDropped).
	linkSeq uint64
	// ownedVia: the single-device routes of the last applied state, per
	// device. The kernel drops them all when the device goes down or loses
	// its last address.
	ownedVia map[string][]string

	wasActive map[string]bool
	// lostAddr: with [ha], the address an uplink lost, kept until it has
	// one again (flushOnTransition).
	lostAddr     map[string]netip.Addr
	fwDamaged    chan struct{}
	ctFlush      []int // indexes of uplinks whose connections must go this pass
	ctFlush6     []int // ... whose IPv6 connections alone must go
	runtimes     map[string]*uplinkRuntime
	probes       chan probeMsg
	traffic      chan trafficMsg // burst verdicts of the traffic trigger
	runCtx       context.Context
	hookRunner   *hooks.Runner
	pendingHooks []pendingHook
	ha           *haRuntime // HA: two-gateway state (ha.go)
	drain        drain      // uplinks drained by hand (drain.go)
	deleg        delegated  // IPv6 prefixes the PD clients reported (delegated.go)

	// wg holds every goroutine Run starts (watcher, monitors, probers, the
	// asynchronous closing of retired reconnectors); Run waits for all.
	wg sync.WaitGroup
	// retired are reconnectors being closed in the background; Run's exit
	// ends their attempts at once.
	retired []*hooks.Reconnector

	// [[service]] backend checks (services.go).
	svcMu      sync.Mutex
	svc        ServiceChecks
	svcChanged chan struct{}
	// x is the wiring around the loop: control socket and status snapshot,
	// publishers, metrics, DHCP, the config-file watch (control.go,
	// publish.go, metrics.go, dhcp.go, reloadwatch.go).
	x extras
}

// New builds the loop from an already loaded config and its dependencies
// (see Open for the production ones). Run takes ownership of deps.Kernel and
// deps.Firewall and closes them when it returns.
func New(cfg *policy.Config, opts Options, deps Deps) (*Daemon, error) {
	if deps.Kernel == nil || deps.Firewall == nil || deps.Events == nil {
		return nil, errors.New("daemon: Kernel, Firewall and Events are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if deps.Clock == nil {
		deps.Clock = hooks.RealClock()
	}
	if err := cfg.CheckRunnable(); err != nil {
		return nil, err
	}
	opts.overrideStateDir(cfg)
	logConfigWarnings(opts.Logger, cfg)
	if deps.Probe == nil {
		deps.Probe = probe.Run
	}
	if deps.Burst == nil {
		deps.Burst = probe.Burst
	}
	if deps.Notify == nil {
		deps.Notify = func(string) {}
	}
	d := &Daemon{
		deps:       deps,
		clock:      deps.Clock,
		kernel:     deps.Kernel,
		fw:         deps.Firewall,
		fwDamaged:  make(chan struct{}, 1),
		opts:       opts,
		log:        opts.Logger,
		cfg:        cfg,
		reload:     make(chan reloadReq),
		lastStates: map[string]policy.UplinkState{},
		sched:      newScheduler(deps.Clock),
		conflicts:  map[string]bool{},
		probes:     make(chan probeMsg, 256),
		traffic:    make(chan trafficMsg, 16),
		wasActive:  map[string]bool{},
		lostAddr:   map[string]netip.Addr{},
		svcChanged: make(chan struct{}, 1),
		ha:         newHARuntime(cfg), // HA
	}
	// The drain state before initExtras builds the first status, so that
	// it shows from the start.
	d.loadDrained(cfg)
	d.loadDelegated(cfg)
	if err := d.initExtras(); err != nil {
		return nil, err
	}
	return d, nil
}

// LoadConfig reads, resolves and validates the config (policy.Load). It does
// not refuse a config without uplinks: New and reloads do, through
// Config.CheckRunnable.
func LoadConfig(path string) (*policy.Config, error) {
	return policy.Load(path)
}

// logConfigWarnings logs the loader's warnings, which `uplinkd check` prints.
func logConfigWarnings(log *slog.Logger, cfg *policy.Config) {
	for _, w := range cfg.Warnings {
		log.Warn("config warning", "event", "config-load", "path", cfg.Path, "reason", w.String())
	}
}

// reloadReq hands a config read outside the loop to it.
type reloadReq struct {
	cfg  *policy.Config
	err  error      // reading or checking the file failed
	done chan error // nil: nobody waits (SIGHUP)
}

// Reload re-reads the config file and hands it to the running loop; on
// error the old config stays in force and the problems are returned. The
// file is read and its user names resolved here, in the caller's
// goroutine, never in the loop's.
func (d *Daemon) Reload(ctx context.Context) error {
	cfg, err := LoadConfig(d.opts.ConfigPath)
	req := reloadReq{cfg: cfg, err: err, done: make(chan error, 1)}
	select {
	case d.reload <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run is the reconcile loop; it returns when ctx is done, and only after
// every goroutine it started has ended. No call made from the loop waits for
// a child process or a socket peer: reconnect commands, hooks and probes run
// in goroutines of their own, and the retired ones are closed in the
// background, so a wedged `pon` never stalls passes or watchdog pings.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	d.runCtx = ctx
	defer d.haClose() // HA: the track file says "stopped" at exit
	d.hookRunner = hooks.NewRunner(d.log)
	defer d.shutdown(cancel)
	d.syncRuntimes(d.cfg)
	d.startServiceChecks()
	defer d.stopServiceChecks()
	// Control socket, publishers, metrics, DHCP, config watch (extras).
	if err := d.startExtras(ctx); err != nil {
		return err
	}

	events := make(chan watcher.Event, 256)
	werr := make(chan error, 1)
	d.wg.Go(func() { werr <- d.deps.Events.Run(ctx, events) })

	// Repair of netfilter state: nftables tells us (its monitor); iptables
	// has no events, so it gets the cheap Check every FirewallPoll.
	fwCheck := newLoopTimer(d.clock)
	defer fwCheck.stop()
	if m := d.deps.FirewallMonitor; m != nil {
		d.wg.Go(func() {
			if err := m.Watch(ctx, d.fwDamaged); err != nil {
				d.log.Warn("firewall monitor unavailable; firewall repair only on the next pass", "reason", err.Error())
			}
		})
	} else if d.deps.FirewallPoll > 0 {
		fwCheck.resetAt(d.clock.Now().Add(d.deps.FirewallPoll))
	}

	// Under systemd with WatchdogSec, the loop itself pings: a pass that
	// hangs stops the pings and systemd restarts the daemon.
	watchdog := newLoopTimer(d.clock)
	defer watchdog.stop()
	if d.deps.Watchdog > 0 {
		watchdog.resetAt(d.clock.Now().Add(d.deps.Watchdog / 2))
	}

	var hup chan os.Signal
	if d.opts.Signals {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	var (
		ready    bool
		due      = d.sched.want
		deadline = newLoopTimer(d.clock) // health hold-downs, silence, reconnect_after
	)
	defer d.sched.stop()
	defer deadline.stop()

	for {
		// Health hold-downs, silence deadlines and reconnect_after all wait
		// on this one timer; it is re-armed from what the last step changed.
		if next := d.nextDeadline(); next.IsZero() {
			deadline.stop()
		} else if !next.Equal(deadline.armedAt()) {
			deadline.resetAt(next)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-werr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watcher: %w", err)
		case ev := <-events:
			// Coalesce: everything already queued belongs to this pass.
			for {
				if d.noteEvent(ev) {
					due(ev.At)
				}
				select {
				case ev = <-events:
					continue
				default:
				}
				break
			}
		case req := <-d.reload:
			if ready {
				d.notifyReloading()
			}
			err := d.applyConfig(req.cfg, req.err)
			if req.done != nil {
				req.done <- err
			}
			if ready {
				d.deps.Notify("READY=1")
			}
			if err == nil {
				due(d.clock.Now())
			}
		case m := <-d.x.ctl:
			// A control-socket request that needs the loop (extras).
			if d.onControl(m) {
				due(d.clock.Now())
			}
		case <-hup:
			// Read in the background like Reload; the result comes back
			// through d.reload.
			d.wg.Go(func() {
				cfg, err := LoadConfig(d.opts.ConfigPath)
				select {
				case d.reload <- reloadReq{cfg: cfg, err: err}:
				case <-ctx.Done():
				}
			})
		case at := <-d.sched.C():
			due(at)
		case at := <-watchdog.C:
			d.deps.Notify("WATCHDOG=1")
			// From the tick, not from now: a late ping does not delay
			// the next one.
			watchdog.resetAt(at.Add(d.deps.Watchdog / 2))
			continue
		case <-d.svcChanged:
			// A backend entered or left a service's healthy set.
			due(d.clock.Now())
		case <-d.fwDamaged:
			d.firewallRepair()
		case <-fwCheck.C:
			fwCheck.resetAt(d.clock.Now().Add(d.deps.FirewallPoll))
			d.firewallRepair()
		case m := <-d.probes:
			if d.onProbe(m, d.clock.Now()) {
				due(m.r.At)
			}
		case m := <-d.traffic:
			if d.onTraffic(m) {
				due(m.at)
			}
		case m := <-d.ha.wake(): // HA: a role event runs a pass at once
			d.haWake(m)
			due(m.at)
		case <-deadline.C:
			// Hold-downs and silence deadlines expire; reconnect_after may
			// have passed: a pass re-evaluates all of it.
			d.tick(d.clock.Now())
			due(d.clock.Now())
		}
		trigger, ok := d.sched.due(d.cfg.Daemon.MinSyncInterval)
		if !ok {
			continue
		}
		res := d.sync(trigger)
		d.sched.done(res)
		if !ready && res.Err == nil {
			ready = true
			d.deps.Notify("READY=1")
		}
		// Status snapshot, publishers, metrics, DHCP follow the pass.
		d.afterPass(res)
		if d.opts.OnSync != nil {
			d.opts.OnSync(res)
		}
	}
}

// shutdown ends what Run started: the context (watcher, monitors,
// probers), every reconnector at once (a running command is killed; pppd
// itself has detached into its own session by then and lives on), the hook
// runner (running hooks finish, bounded by their timeouts), then waits for
// every goroutine before closing the kernel and firewall handles.
func (d *Daemon) shutdown(cancel context.CancelFunc) {
	d.deps.Notify("STOPPING=1")
	d.x.cleanStop = d.runCtx.Err() != nil // the caller ended Run, no failure did
	cancel()
	d.stopExtras()
	for _, rt := range d.runtimes {
		rt.stopProbers()
		if rt.reconn != nil {
			rt.reconn.Kill()
		}
	}
	for _, r := range d.retired {
		r.Kill()
	}
	d.retired = nil
	d.hookRunner.Close()
	d.wg.Wait()
	d.flushOnExit()
	d.fw.Close()
	d.kernel.Close()
}

// noteEvent reports whether an event needs a pass (what it says about links
// is in the link history the kernel mirror keeps).
func (d *Daemon) noteEvent(ev watcher.Event) bool {
	if ev.Kind == watcher.KindResync {
		d.noteResync()
	}
	if ev.IPv6 && !d.cfg.IPv6On() && ev.Protocol != policy.Protocol {
		// The watcher always hears IPv6; with no uplink on IPv6 only
		// uplinkd's own leftovers (a run with ipv6 on) matter.
		return false
	}
	return !ownEcho(ev)
}

// linkNotUp reports whether every error joined in err is ENETDOWN: a route
// via a link whose address arrived before the link was set up. That is the
// normal order of a ppp redial, not a failure.
func linkNotUp(err error) bool {
	if err == nil {
		return false
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !linkNotUp(e) {
				return false
			}
		}
		return true
	}
	if errors.Is(err, syscall.ENETDOWN) {
		return true
	}
	if w := errors.Unwrap(err); w != nil {
		return linkNotUp(w)
	}
	return false
}

// ownEcho tells the notification of a rule or route uplinkd itself just
// added: it needs no pass. Deletions of our objects still do (someone may
// have removed them), and so does everything else.
func ownEcho(ev watcher.Event) bool {
	return (ev.Kind == watcher.KindRoute || ev.Kind == watcher.KindRule) && !ev.Deleted && ev.Protocol == policy.Protocol
}

// applyConfig switches the loop to a config read by Reload (or the SIGHUP
// reader); err is why reading it failed. An empty or truncated file (no
// [[uplink]]) is refused like a bad one: it must not take the gateway offline.
func (d *Daemon) applyConfig(cfg *policy.Config, err error) error {
	if err == nil {
		err = cfg.CheckRunnable()
	}
	if err == nil {
		d.opts.overrideStateDir(cfg)
	}
	if err == nil && (cfg.Firewall.Backend != d.cfg.Firewall.Backend || cfg.Firewall.IPTablesVariant != d.cfg.Firewall.IPTablesVariant) {
		err = fmt.Errorf("%s: [firewall] backend and iptables_variant cannot change on reload; restart uplinkd", cfg.Path)
	}
	if err == nil {
		// Hook dir, publishers, DHCP: refused before anything changes.
		err = d.checkExtras(cfg)
	}
	if err != nil {
		d.log.Error("config reload failed; keeping the running config", "event", "config-reload", "reason", err.Error())
		return err
	}
	logConfigWarnings(d.log, cfg)
	d.forgetMovedMarks(d.cfg, cfg)
	setTables(d.kernel, cfg)
	d.cfg = cfg
	d.syncRuntimes(cfg)
	d.updateServiceChecks(cfg)
	d.reloadExtras(cfg)
	d.log.Info("config reloaded", "event", "config-reload", "path", cfg.Path)
	return nil
}

// sync is one reconcile pass: observe → compute → diff → apply.
func (d *Daemon) sync(trigger time.Time) SyncResult {
	res := SyncResult{Trigger: trigger, Start: d.clock.Now()}
	obs, err := d.kernel.Snapshot()
	if err != nil {
		res.Err, res.End = err, d.clock.Now()
		d.log.Error("snapshot failed", "event", "apply", "reason", err.Error())
		return res
	}
	d.noteLAN(obs) // for the DHCP server (dhcp.go)
	now := d.clock.Now()
	d.expireDelegated(now)
	obs.Delegated = d.deleg.set.Prefixes()
	links := policy.LinkStates(d.cfg, obs)
	links6 := policy.LinkStates6(d.cfg, obs)
	flushed, bounced := d.kernelDropped(links, obs)
	desired := policy.ComputeWith(d.cfg, obs, links, d.feedLinks(links, links6, now), d.drainedSet(), d.degradedSet())
	d.drain.lastObs, d.drain.lastLinks = obs, links
	if obs.Sysctls, err = d.kernel.ReadSysctls(desired.SysctlKeys()); err != nil {
		d.log.Warn("reading sysctls", "reason", err.Error())
	}
	res.Desired = desired
	changes := policy.Diff(desired, obs)
	d.logTransitions(desired.Uplinks, bounced)

	changes = d.dropConflicts(changes)
	// A repair undoes someone else; what the kernel dropped by itself (its
	// link is down, bounced or lost its last address) comes back at once
	// and outside the repair budget, and is no longer counted as ours.
	for dev := range flushed {
		for _, k := range d.ownedVia[dev] {
			delete(d.lastApplied, "route:"+k)
		}
	}
	applied := d.lastApplied
	isRepair := func(c policy.Change) bool {
		return policy.IsRepair(c, applied) && !viaAny(c, flushed)
	}
	if n := countFunc(changes, isRepair); n > 0 {
		if d.sched.allowRepair(now) {
			res.Repaired = true
			d.log.Warn("undoing a change someone else made to what uplinkd keeps", "event", "apply", "reason", "repair", "repairs", n)
		} else {
			// Out of repair tokens: hold the repairs back, but never the
			// rest of the pass (a failover must not wait for a fight).
			res.Deferred = true
			changes = slices.DeleteFunc(changes, isRepair)
			d.log.Warn("someone keeps changing what uplinkd keeps; holding off the repair",
				"event", "apply", "reason", "repair rate limit", "repairs", n)
		}
	}
	d.forgetStaleGateways(desired.Uplinks, obs)
	// NAT follows the addresses of this very pass, then the connections
	// bound to an old address or a dead uplink go, so LAN hosts reconnect
	// through what is there now instead of hanging.
	rs := firewall.Compute(firewall.Input{Config: d.cfg, Uplinks: desired.Uplinks, Healthy: d.healthyBackends(), NPT6: d.npt6Maps(obs)})
	var fwChanged bool
	res.Err, fwChanged, err = d.applyBoth(changes, obs, rs)
	if err != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("firewall: %w", err))
	}
	res.FirewallChanged = fwChanged
	d.flushConntrack()
	d.haSync(desired.Uplinks, now) // HA: track file and exclusive uplinks
	res.End = d.clock.Now()
	d.afterApply(links, links6, now)
	d.fireHooks()
	res.Changes = changes
	d.rememberLinks(obs)
	if res.Err == nil && !res.Deferred {
		d.lastApplied = desired.AppliedKeys()
		d.ownedVia = ownedVia(desired.Routes)
	} else {
		// Some changes may not have been made (or repairs were held back):
		// what is still wanted as before stays ours, what this pass removed
		// is not ours any more, and what it added counts once a pass
		// succeeds.
		want := desired.AppliedKeys()
		maps.DeleteFunc(d.lastApplied, func(k, v string) bool { return want[k] != v })
	}
	if fwChanged {
		d.log.Info("firewall applied", "event", "apply", "backend", d.cfg.Firewall.Backend)
	}
	if len(changes) > 0 {
		d.logApplied(res, trigger, changes)
		d.deps.Notify("STATUS=" + statusLine(desired.Uplinks))
	}
	return res
}

// logApplied logs what a pass changed. The `commands` list renders every
// change as text: it is built only when the record's level is enabled (not
// at log_level = "warn"), since the next pass may be waiting.
func (d *Daemon) logApplied(res SyncResult, trigger time.Time, changes []policy.Change) {
	level, msg := slog.LevelInfo, "applied"
	switch {
	case errors.Is(res.Err, kernel.ErrStale):
		msg = "kernel changed during the pass; resyncing"
	case linkNotUp(res.Err):
		msg = "link not up yet; applying again on its link-up event"
	case res.Err != nil:
		level, msg = slog.LevelError, "apply failed (will retry)"
	}
	ctx := context.Background()
	if !d.log.Enabled(ctx, level) {
		return
	}
	cmds := make([]string, len(changes))
	for i, c := range changes {
		cmds[i] = c.Command()
	}
	attrs := []any{"event", "apply", "changes", len(changes), "duration", res.End.Sub(res.Start),
		"latency", res.End.Sub(trigger), "commands", cmds}
	if res.Err != nil {
		attrs = append(attrs, "reason", res.Err.Error())
	}
	d.log.Log(ctx, level, msg, attrs...)
}

// applyBoth makes the routing changes and syncs the firewall. The two do
// not wait for each other: the routing writes go over rtnetlink (under the
// kernel's RTNL lock, which a redialling link holds for a while), the
// firewall transaction over nfnetlink (under nftables' own mutex), and no
// rule, route or NAT rule of one refers to a change the other makes in the
// same pass (marks and chains are fixed by the config; SNAT names the
// address, which the kernel already has). So they run at the same time and
// the pass waits for the slower instead of the sum. Make-before-break stays
// inside Apply; the conntrack delete still comes after both. When one side
// has nothing to do, both run inline: handing a no-op to another goroutine
// costs more than it saves.
func (d *Daemon) applyBoth(changes []policy.Change, obs policy.Observed, rs firewall.Ruleset) (routeErr error, fwChanged bool, fwErr error) {
	if len(changes) == 0 || d.fw.InSync(rs) {
		if len(changes) > 0 {
			routeErr = d.kernel.Apply(changes, obs)
		}
		fwChanged, fwErr = d.fw.Sync(rs)
		return routeErr, fwChanged, fwErr
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fwChanged, fwErr = d.fw.Sync(rs)
	}()
	routeErr = d.kernel.Apply(changes, obs)
	<-done
	return routeErr, fwChanged, fwErr
}

// kernelDropped tells, per uplink interface, what happened since the last
// pass that the pass itself could not see, from the link history
// (internal/linklog) between the last pass's snapshot and this one:
//
//   - bounced: down/up cycles of the link between the two passes that no
//     pass saw. The history's down transitions (each told once, a gap's
//     counted by the kernel itself) around the state the last pass saw
//     and the one this pass sees.
//   - flushed: the kernel dropped the link's routes by itself (the link is
//     down now, it went down in between, or a link or address record names
//     it and every owned route via it is gone: its last address went).
//     Restoring them is not a repair.
func (d *Daemon) kernelDropped(links []policy.UplinkState, obs policy.Observed) (flushed map[string]bool, bounced map[string]bounce) {
	recs, complete := d.kernel.LinkHistory(d.linkSeq, obs.LinkSeq)
	if !complete {
		d.log.Warn("link history overflowed between two passes; comparing states only",
			"event", "apply", "reason", "link history overflow")
	}
	history := linklog.Summarize(recs)
	have := make(map[string]bool, len(obs.Routes))
	for _, r := range obs.Routes {
		have[r.Key()] = true
	}
	for _, st := range links {
		link, ok := obs.Links[st.Iface]
		if ok && !linkUpNow(link) {
			// The kernel drops every route via a link that is down.
			if flushed == nil {
				flushed = map[string]bool{}
			}
			flushed[st.Iface] = true
		}
		old, seen := d.lastStates[st.Name]
		if !ok || !seen || old.Iface != st.Iface {
			continue
		}
		h := history[st.Iface]
		owned := d.ownedVia[st.Iface]
		gone := len(owned) > 0 && !slices.ContainsFunc(owned, func(k string) bool { return have[k] })
		vanished := gone && (h.Touched || !complete)
		n := min(h.Downs, 1000)
		var b bounce
		switch wasUp, nowUp := linkUp(old), linkUp(st); {
		case n == 0:
		case wasUp && nowUp:
			b.cycles = n // down, up: each time
		case wasUp:
			b.cycles = n - 1 // down, up; the last down is the one this pass sees
		default:
			b = bounce{cycles: n, upFirst: true} // up, down; then maybe the up this pass sees
		}
		if b.cycles > 0 {
			if bounced == nil {
				bounced = map[string]bounce{}
			}
			bounced[st.Iface] = b
		}
		if n > 0 || vanished {
			if flushed == nil {
				flushed = map[string]bool{}
			}
			flushed[st.Iface] = true
		}
	}
	return flushed, bounced
}

func linkUpNow(l policy.Link) bool { return l.Up && l.Carrier }

// bounce is what happened to a link between two passes that neither saw:
// cycles of down then up, or of up then down (upFirst: the last pass saw
// it down).
type bounce struct {
	cycles  int
	upFirst bool
}

// rememberLinks keeps where in the link history this pass's snapshot was.
func (d *Daemon) rememberLinks(obs policy.Observed) {
	d.linkSeq = obs.LinkSeq
}

// ownedVia lists the keys of the single-device routes per device.
func ownedVia(routes []policy.Route) map[string][]string {
	m := map[string][]string{}
	for _, r := range routes {
		if len(r.Nexthops) == 1 {
			m[r.Nexthops[0].Dev] = append(m[r.Nexthops[0].Dev], r.Key())
		}
	}
	return m
}

// viaAny reports whether a route change goes through one of the devices.
func viaAny(c policy.Change, devs map[string]bool) bool {
	if len(devs) == 0 || (c.Op != policy.OpAddRoute && c.Op != policy.OpReplaceRoute) {
		return false
	}
	return slices.ContainsFunc(c.Route.Nexthops, func(nh policy.Nexthop) bool { return devs[nh.Dev] })
}

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

// dropConflicts removes (and reports once) desired routes whose slot a
// foreign route holds: uplinkd never overwrites state it does not own.
func (d *Daemon) dropConflicts(changes []policy.Change) []policy.Change {
	out := changes[:0]
	for _, c := range changes {
		if c.Op != policy.OpConflict {
			out = append(out, c)
			continue
		}
		if k := c.Route.Key(); !d.conflicts[k] {
			d.conflicts[k] = true
			d.log.Warn("a foreign route holds a slot uplinkd wants; leaving it alone",
				"event", "apply", "reason", "conflict", "wanted", c.Route.IPRoute(), "foreign", c.Old.IPRoute())
		}
	}
	return out
}

// logTransitions emits one structured record per uplink state change.
// Hook events it finds run after the pass has applied its changes. A bounce
// the passes never saw is told as the link-down and link-up it was, with
// their hooks, in the order they happened and before the transition this
// pass sees.
func (d *Daemon) logTransitions(states []policy.UplinkState, bounced map[string]bounce) {
	for _, st := range states {
		old, seen := d.lastStates[st.Name]
		d.lastStates[st.Name] = st
		rt := d.runtimes[st.Name]
		attrs := []any{"uplink", st.Name, "iface", st.Iface}
		const why = "link bounced between passes"
		linkDown := func() {
			d.log.Info("link down", append(attrs, "event", "link-down", "reason", why)...)
			d.queueHook(rt, hooks.HookEvent{Event: "link-down", Uplink: st.Name, Iface: st.Iface, Reason: why})
		}
		linkUpAgain := func() {
			d.log.Info("link up", append(attrs, "event", "link-up", "reason", why)...)
			d.queueHook(rt, hooks.HookEvent{Event: "link-up", Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: why})
		}
		b := bounced[st.Iface]
		for range b.cycles {
			if b.upFirst {
				linkUpAgain()
				linkDown()
				continue
			}
			linkDown()
			// A usable uplink was out of service for the moment too.
			if old.Usable && st.Usable {
				d.queueHook(rt, hooks.HookEvent{Event: "down", Uplink: st.Name, Iface: st.Iface, Reason: why})
			}
			linkUpAgain()
			if old.Usable && st.Usable {
				d.queueHook(rt, hooks.HookEvent{Event: "up", Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: st.Reason})
			}
		}
		if seen && d.flushOnTransition(old, st) {
			d.ctFlush = append(d.ctFlush, d.uplinkIndex(st.Name))
		} else if seen && flush6OnTransition(old.IPv6, st.IPv6) {
			// The IPv6 side alone failed or renumbered: its IPv6
			// connections go, the IPv4 ones stay.
			d.ctFlush6 = append(d.ctFlush6, d.uplinkIndex(st.Name))
		}
		if st.Addr != old.Addr && (seen || st.Addr.IsValid()) {
			d.log.Info("address changed", append(attrs, "event", "addr-change", "old_ip", addrString(old.Addr), "new_ip", addrString(st.Addr))...)
			d.queueHook(rt, hooks.HookEvent{Event: "addr-change", Uplink: st.Name, Iface: st.Iface,
				OldIP: addrString(old.Addr), NewIP: addrString(st.Addr), Reason: st.Reason})
		}
		if linkUp(st) != linkUp(old) || !seen {
			ev := "link-down"
			if linkUp(st) {
				ev = "link-up"
			}
			d.log.Info("link "+strings.TrimPrefix(ev, "link-"), append(attrs, "event", ev, "reason", st.Reason)...)
			d.noteUplinkEvent(st.Name, ev) // the status's last_event, hook or not
			if seen {
				d.queueHook(rt, hooks.HookEvent{Event: ev, Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: st.Reason})
			}
		}
		if st.Usable != old.Usable && seen {
			ev := "down"
			if st.Usable {
				ev = "up"
			}
			d.queueHook(rt, hooks.HookEvent{Event: ev, Uplink: st.Name, Iface: st.Iface, NewIP: addrString(st.Addr), Reason: st.Reason})
		}
		if st.Active != old.Active && seen {
			d.log.Info("default route membership changed", append(attrs, "event", "route", "active", st.Active, "reason", st.Reason)...)
		}
	}
}

// flushOnTransition tells whether a transition clears the uplink's
// conntrack entries (after the pass's firewall sync). An address replaced or
// lost, or a failure, does: an entry made in the instant between the route
// change and the SNAT rewrite would otherwise keep a NAT binding to an
// address that is gone, and LAN hosts reconnect sooner. An address gained
// where there was none does not: the entries of any earlier address went
// when it did, and those there now are NATed to this one.
//
// With two gateways ([ha]) an address that disappears may be a keepalived
// WAN address moving to the other box, whose conntrackd carries the
// connections over: deleting them here would have conntrackd delete them
// there too. So the loss is remembered instead, and the entries go only if
// the uplink comes back with another address.
func (d *Daemon) flushOnTransition(old, st policy.UplinkState) bool {
	switch {
	case old.Addr.IsValid() && !st.Addr.IsValid() && d.cfg.HA.Enabled():
		d.lostAddr[st.Name] = old.Addr
		return false
	case old.Addr.IsValid() && st.Addr != old.Addr:
		return true
	case !old.Addr.IsValid() && st.Addr.IsValid():
		lost, ok := d.lostAddr[st.Name]
		delete(d.lostAddr, st.Name)
		return ok && lost != st.Addr
	}
	return old.Usable && !st.Usable
}

// flushConntrack deletes, inside the kernel and by the uplink's connection
// mark, the conntrack entries of uplinks whose address changed or that
// failed this pass, without counting them: one request instead of three on
// the event path.
func (d *Daemon) flushConntrack() {
	for _, i := range d.ctFlush {
		if i < 0 {
			continue
		}
		u := d.cfg.Uplinks[i]
		attrs := []any{"event", "conntrack", "uplink", u.Name, "iface", u.Interface}
		if err := d.fw.ClearConntrackByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask); err != nil {
			d.log.Warn("deleting conntrack entries", append(attrs, "reason", err.Error())...)
			continue
		}
		d.log.Info("conntrack entries of the uplink deleted", attrs...)
	}
	d.ctFlush = d.ctFlush[:0]
	d.flushConntrack6()
}

// flush6OnTransition: an uplink's IPv6 connections go when its IPv6 side
// stops being usable or its IPv6 address changes (the connections from
// the old address are dead).
func flush6OnTransition(old, st policy.UplinkState6) bool {
	return old.On && (old.Usable && !st.Usable || old.Addr.IsValid() && st.Addr != old.Addr)
}

// flushConntrack6 deletes the IPv6 conntrack entries of the uplinks of
// ctFlush6, by their connection mark (set by the IPv6 firewall state for
// uplinks with ipv6 on).
func (d *Daemon) flushConntrack6() {
	for _, i := range d.ctFlush6 {
		if i < 0 {
			continue
		}
		u := d.cfg.Uplinks[i]
		attrs := []any{"event", "conntrack", "uplink", u.Name, "iface", u.Interface, "family", "ipv6"}
		if err := d.fw.ClearConntrack6ByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask); err != nil {
			d.log.Warn("deleting IPv6 conntrack entries", append(attrs, "reason", err.Error())...)
			continue
		}
		d.log.Info("IPv6 conntrack entries of the uplink deleted", attrs...)
	}
	d.ctFlush6 = d.ctFlush6[:0]
}

// forgetMovedMarks: connection marks are per uplink position, so an uplink
// removed or moved by a reload would hand its connections' mark to another
// uplink (and its sticky rule would route them there). Those connections are
// deleted instead and start over.
func (d *Daemon) forgetMovedMarks(old, cfg *policy.Config) {
	for i, u := range old.Uplinks {
		if i < len(cfg.Uplinks) && cfg.Uplinks[i].Name == u.Name {
			continue
		}
		if _, err := d.fw.DeleteConntrackByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask); err != nil {
			d.log.Warn("deleting conntrack entries of a moved uplink", "event", "conntrack", "uplink", u.Name, "reason", err.Error())
		}
	}
}

func (d *Daemon) uplinkIndex(name string) int {
	for i := range d.cfg.Uplinks {
		if d.cfg.Uplinks[i].Name == name {
			return i
		}
	}
	return -1
}

// firewallRepair runs the backend's cheap Check; damage (someone flushed
// our table or chains) makes the next pass's Sync rewrite it all. Repairs
// share the routing repairs' rate limit, so uplinkd never fights a firewall
// manager in a tight loop.
func (d *Daemon) firewallRepair() {
	intact, err := d.fw.Check()
	if err != nil {
		d.log.Warn("firewall check failed", "reason", err.Error())
	}
	if intact || d.sched.pending {
		return
	}
	now := d.clock.Now()
	if !d.sched.allowRepair(now) {
		d.log.Warn("owned firewall state keeps changing; holding off the repair", "event", "apply", "reason", "repair rate limit")
		d.sched.deferRepair()
		return
	}
	d.log.Warn("owned firewall state changed by someone else; restoring", "event", "apply", "reason", "repair", "backend", d.cfg.Firewall.Backend)
	d.countRepair()
	d.sched.want(now)
}

// forgetStaleGateways deletes the neighbour entry of the gateway of every
// uplink about to rejoin the default route: an entry left from before the
// failure may point at a MAC that is gone, blackholing the fail-back.
func (d *Daemon) forgetStaleGateways(states []policy.UplinkState, obs policy.Observed) {
	for _, st := range states {
		if st.Active && !d.wasActive[st.Name] && st.Gateway.IsValid() {
			if err := d.kernel.ForgetNeighbor(st.Iface, st.Gateway, obs); err != nil {
				d.log.Warn("deleting the gateway's neighbour entry", "uplink", st.Name, "iface", st.Iface, "reason", err.Error())
			}
		}
	}
	clear(d.wasActive)
	for _, st := range states {
		d.wasActive[st.Name] = st.Active
	}
}

func linkUp(st policy.UplinkState) bool { return st.Present && st.Carrier }

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func statusLine(states []policy.UplinkState) string {
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}
