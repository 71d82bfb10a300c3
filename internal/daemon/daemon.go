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
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/uplinkd/uplinkd/hooks"
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
	// ConntrackDeletes is how many conntrack deletes by uplink mark the
	// pass sent (one per uplink and family whose connections it cleared).
	ConntrackDeletes int
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

	// sched decides when passes run (scheduler.go); rec runs them and
	// keeps what one pass hands the next (reconciler.go).
	sched *scheduler
	rec   *reconciler
	// sup starts and stops the components around the loop (components.go);
	// sd is the one that talks to systemd.
	sup supervisor
	sd  *systemd

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

	// svc runs the [[service]] backend checks (services.go).
	svc *serviceChecks
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
		deps:    deps,
		clock:   deps.Clock,
		kernel:  deps.Kernel,
		fw:      deps.Firewall,
		opts:    opts,
		log:     opts.Logger,
		cfg:     cfg,
		reload:  make(chan reloadReq),
		sched:   newScheduler(deps.Clock),
		probes:  make(chan probeMsg, 256),
		traffic: make(chan trafficMsg, 16),
		ha:      newHARuntime(cfg), // HA
	}
	d.svc = newServiceChecks(deps.Services, func() *policy.Config { return d.cfg })
	d.rec = newReconciler(d.log, d.clock, d.kernel, d.fw, d.sched, d)
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
// background, so a wedged `pon` never stalls passes or watchdog pings. The
// select only hands each input to its owner (components.go); the scheduler
// says when a pass is due, the reconciler runs it.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	d.runCtx = ctx
	defer d.haClose() // HA: the track file says "stopped" at exit
	d.hookRunner = hooks.NewRunner(d.log)
	defer d.shutdown(cancel)
	d.syncRuntimes(d.cfg)
	d.setHookDir(d.cfg)
	d.x.listening = listenKeys(d.cfg)
	in := d.newInputs()
	d.sd = in.systemd
	if err := d.sup.start(ctx, d.components(in)...); err != nil {
		return err
	}
	deadline := newLoopTimer(d.clock) // health hold-downs, silence, reconnect_after
	defer deadline.stop()
	for {
		d.armDeadline(deadline)
		select {
		case <-ctx.Done():
			return nil
		case err := <-in.events.errs:
			return in.events.ended(ctx, err)
		case ev := <-in.events.out:
			d.onEvents(ev, in.events.out)
		case req := <-d.reload:
			d.onReload(req)
		case m := <-d.x.ctl: // a control-socket request that needs the loop
			d.wantIf(d.onControl(m), d.clock.Now())
		case <-in.hup.c: // read in the background; the result comes through d.reload
			d.readConfig(ctx)
		case at := <-d.sched.C():
			d.sched.want(at)
		case at := <-in.systemd.timer.C:
			in.systemd.ping(at)
			continue
		case <-d.svc.changed: // a backend entered or left a service's healthy set
			d.sched.want(d.clock.Now())
		case <-in.fw.damaged:
			d.firewallRepair()
		case <-in.fw.poll.C:
			in.fw.polled()
			d.firewallRepair()
		case m := <-d.probes:
			d.wantIf(d.onProbe(m, d.clock.Now()), m.r.At)
		case m := <-d.traffic:
			d.wantIf(d.onTraffic(m), m.at)
		case m := <-d.ha.wake(): // HA: a role event runs a pass at once
			d.wantIf(d.haWake(m), m.at)
		case <-deadline.C: // hold-downs, silence deadlines, reconnect_after
			d.tick(d.clock.Now())
			d.sched.want(d.clock.Now())
		}
		d.passIfDue()
	}
}

// passIfDue runs a pass when the scheduler says one is due; the status,
// publishers, metrics and DHCP follow it.
func (d *Daemon) passIfDue() {
	trigger, ok := d.sched.due(d.cfg.Daemon.MinSyncInterval)
	if !ok {
		return
	}
	res := d.sync(trigger)
	d.sched.done(res)
	d.sd.passed(res)
	d.afterPass(res)
	if d.opts.OnSync != nil {
		d.opts.OnSync(res)
	}
}

// wantIf asks for a pass triggered at at when a step says one is needed.
func (d *Daemon) wantIf(needed bool, at time.Time) {
	if needed {
		d.sched.want(at)
	}
}

// armDeadline re-arms the one timer health hold-downs, silence deadlines
// and reconnect_after wait on, from what the last step changed.
func (d *Daemon) armDeadline(t *loopTimer) {
	if next := d.nextDeadline(); next.IsZero() {
		t.stop()
	} else if !next.Equal(t.due()) {
		t.resetAt(next)
	}
}

// onEvents takes a kernel event and everything already queued behind it:
// they all belong to one pass.
func (d *Daemon) onEvents(ev watcher.Event, queued <-chan watcher.Event) {
	for {
		d.wantIf(d.noteEvent(ev), ev.At)
		select {
		case ev = <-queued:
			continue
		default:
		}
		return
	}
}

// onReload switches to a config read outside the loop and asks for a pass.
func (d *Daemon) onReload(req reloadReq) {
	d.sd.reloading()
	err := d.applyConfig(req.cfg, req.err)
	if req.done != nil {
		req.done <- err
	}
	d.sd.reloaded()
	d.wantIf(err == nil, d.clock.Now())
}

// readConfig reads the config file on a goroutine of its own (SIGHUP) and
// hands it to the loop like Reload.
func (d *Daemon) readConfig(ctx context.Context) {
	d.wg.Go(func() {
		cfg, err := LoadConfig(d.opts.ConfigPath)
		select {
		case d.reload <- reloadReq{cfg: cfg, err: err}:
		case <-ctx.Done():
		}
	})
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
	d.sup.stop()
	d.sched.stop()
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
	closeSocket(d.x.sock) // a start that failed before serving it (Serve closes it otherwise)
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
	return needsPass(ev)
}

// needsPass: a pass computes from the mirror's snapshot, so a notification
// that left the mirror as it was (watcher.Unchanged: a route of table
// local, a link message repeating what the mirror holds, any IPv6 but
// uplinkd's own while no uplink has ipv6 on) cannot change what a pass
// would do, and neither can uplinkd's own writes coming back (ownEcho).
func needsPass(ev watcher.Event) bool {
	if ev.Effect == watcher.Unchanged {
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
// wrote: it needs no pass, since the pass that wrote it is the one that
// wanted it so. An add of uplinkd's protocol is taken as its own; a delete
// only when the mirror was waiting for it (watcher.Echo: the echo of a
// delete Apply made). Any other delete of our objects still brings a pass
// (someone may have removed them), and so does everything else.
func ownEcho(ev watcher.Event) bool {
	if ev.Kind != watcher.KindRoute && ev.Kind != watcher.KindRule {
		return false
	}
	return ev.Effect == watcher.Echo || !ev.Deleted && ev.Protocol == policy.Protocol
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
	d.rec.forgetMovedMarks(d.cfg, cfg)
	setTables(d.kernel, cfg)
	d.cfg = cfg
	d.syncRuntimes(cfg)
	d.reloadExtras(cfg)
	d.log.Info("config reloaded", "event", "config-reload", "path", cfg.Path)
	return nil
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

// sync runs one pass with the config in force.
func (d *Daemon) sync(trigger time.Time) SyncResult { return d.rec.sync(d.cfg, trigger) }

// The rest of passHost (reconciler.go); *Daemon has the others already.

func (d *Daemon) delegatedPrefixes() map[string][]netip.Prefix { return d.deleg.set.Prefixes() }

func (d *Daemon) noteComputed(obs policy.Observed, links []policy.UplinkState) {
	d.drain.lastObs, d.drain.lastLinks = obs, links
}

func (d *Daemon) queueUplinkHook(uplink string, ev hooks.HookEvent) {
	d.queueHook(d.runtimes[uplink], ev)
}

func (d *Daemon) notify(state string) { d.deps.Notify(state) }
