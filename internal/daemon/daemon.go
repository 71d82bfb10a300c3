// Package daemon wires uplinkd together: the watcher's netlink triggers feed
// one reconcile loop that snapshots the kernel, computes the whole desired
// state (policy.Compute), diffs it and applies only the difference — the
// kube-proxy proxier shape, driven by events instead of a sync period.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/vishvananda/netns"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
	"github.com/uplinkd/uplinkd/watcher/backendcheck"
)

// Options configure one daemon instance.
type Options struct {
	ConfigPath string
	// NetNS is the namespace to manage; -1 (or zero Options via New) means
	// the process's own. Tests run the daemon in-process in a lab namespace.
	NetNS  netns.NsHandle
	Logger *slog.Logger
	// OnSync, if set, is called after every reconcile pass (tests, benchmarks).
	OnSync func(SyncResult)
	// Signals enables SIGHUP reload (the real daemon; tests call Reload).
	Signals bool
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
	// FirewallChanged: the pass rewrote (part of) the netfilter state.
	FirewallChanged bool
}

// Daemon is the running reconcile loop.
type Daemon struct {
	opts   Options
	log    *slog.Logger
	kernel policy.Kernel
	cfg    *policy.Config

	reload chan chan error

	// lastApplied holds the keys of what the previous successful pass made
	// true, to tell a repair (someone removed our object) from a change.
	lastApplied map[string]string
	lastStates  map[string]policy.UplinkState
	repairs     *tokenBucket
	conflicts   map[string]bool

	wasActive    map[string]bool
	fw           firewall.Backend
	fwDamaged    chan struct{}
	ctFlush      []int // indexes of uplinks whose connections must go this pass
	runtimes     map[string]*uplinkRuntime
	probes       chan probeMsg
	runCtx       context.Context
	hookRunner   *hooks.Runner
	pendingHooks []pendingHook

	// [[service]] backend checks (services.go).
	svcMu      sync.Mutex
	svc        *backendcheck.Checker
	svcChanged chan struct{}
}

// Repairs are rate-limited: a burst for the admin's occasional `ip rule del`,
// then one per second, so uplinkd never fights another daemon in a tight loop.
const (
	repairBurst  = 5
	repairRefill = time.Second
	retryAfter   = time.Second
)

// New loads the configuration and opens the kernel handle; a bad config
// returns policy.Problems and touches nothing.
func New(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckRunnable(); err != nil {
		return nil, err
	}
	logConfigWarnings(opts.Logger, cfg)
	k, err := policy.OpenKernel(opts.NetNS)
	if err != nil {
		return nil, err
	}
	fd := int(opts.NetNS)
	fw, err := firewall.FromConfig(cfg.Firewall, fd, opts.Logger)
	if err != nil {
		k.Close()
		return nil, fmt.Errorf("firewall %s: %w", cfg.Firewall.Backend, err)
	}
	return &Daemon{
		fw:         fw,
		fwDamaged:  make(chan struct{}, 1),
		opts:       opts,
		log:        opts.Logger,
		kernel:     k,
		cfg:        cfg,
		reload:     make(chan chan error),
		lastStates: map[string]policy.UplinkState{},
		repairs:    newTokenBucket(repairBurst, repairRefill),
		conflicts:  map[string]bool{},
		probes:     make(chan probeMsg, 256),
		wasActive:  map[string]bool{},
		svcChanged: make(chan struct{}, 1),
	}, nil
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

// Reload re-reads the config file in the running loop; on error the old
// config stays in force and the problems are returned.
func (d *Daemon) Reload(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case d.reload <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run is the reconcile loop; it returns when ctx is done.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.kernel.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d.runCtx = ctx
	d.hookRunner = hooks.NewRunner(d.log)
	defer d.hookRunner.Close()
	d.syncRuntimes(d.cfg)
	defer func() {
		for _, rt := range d.runtimes {
			rt.close()
		}
	}()
	d.startServiceChecks()
	defer d.svcChecker().Close()

	events := make(chan watcher.Event, 256)
	werr := make(chan error, 1)
	go func() {
		werr <- watcher.Run(ctx, watcher.Options{NetNS: d.netnsFD(), Logger: d.log}, events)
	}()

	defer d.fw.Close()
	// Repair of netfilter state: nftables tells us (its monitor); iptables
	// has no events, so it gets the cheap Check once a second.
	var fwCheck <-chan time.Time
	if d.cfg.Firewall.Backend == "iptables" {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		fwCheck = t.C
	} else {
		go func() {
			if err := firewall.WatchNFTables(ctx, d.netnsFD(), d.fwDamaged); err != nil {
				d.log.Warn("nftables monitor unavailable; firewall repair only on the next pass", "reason", err.Error())
			}
		}()
	}

	// Under systemd with WatchdogSec, the loop itself pings: a pass that
	// hangs stops the pings and systemd restarts the daemon.
	var watchdog <-chan time.Time
	if every, err := daemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		watchdog = t.C
	}

	var hup chan os.Signal
	if d.opts.Signals {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	var (
		pending  bool
		trigger  time.Time
		lastSync time.Time
		ready    bool
		timer    = time.NewTimer(time.Hour)
		deadline = time.NewTimer(time.Hour)
	)
	timer.Stop()
	deadline.Stop()
	schedule := func(at time.Time) {
		timer.Stop()
		timer.Reset(time.Until(at))
	}

	for {
		// Health hold-downs, silence deadlines and reconnect_after all wait
		// on this one timer; it is re-armed from what the last step changed.
		if next := d.nextDeadline(); !next.IsZero() {
			deadline.Stop()
			deadline.Reset(time.Until(next))
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
			if ownEcho(ev) {
				continue
			}
			if !pending {
				trigger = ev.At
			}
			pending = true
			// Coalesce: everything already queued belongs to this pass.
			for drained := false; !drained; {
				select {
				case <-events:
				default:
					drained = true
				}
			}
		case done := <-d.reload:
			err := d.doReload()
			done <- err
			if err == nil {
				pending, trigger = true, time.Now()
			}
		case <-hup:
			_ = d.doReload()
			pending, trigger = true, time.Now()
		case <-timer.C:
			pending = true
			if trigger.IsZero() {
				trigger = time.Now()
			}
		case <-watchdog:
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			continue
		case <-d.svcChanged:
			// A backend entered or left a service's healthy set.
			if !pending {
				pending, trigger = true, time.Now()
			}
		case <-d.fwDamaged:
			d.firewallRepair(&pending, &trigger, schedule)
		case <-fwCheck:
			d.firewallRepair(&pending, &trigger, schedule)
		case m := <-d.probes:
			if d.onProbe(m, time.Now()) && !pending {
				pending, trigger = true, m.r.At
			}
		case <-deadline.C:
			// Hold-downs and silence deadlines expire; reconnect_after may
			// have passed: a pass re-evaluates all of it.
			d.tick(time.Now())
			if !pending {
				pending, trigger = true, time.Now()
			}
		}
		if !pending {
			continue
		}
		if wait := time.Until(lastSync.Add(d.cfg.Daemon.MinSyncInterval)); wait > 0 {
			schedule(time.Now().Add(wait))
			continue
		}
		res := d.sync(trigger)
		lastSync = res.End
		pending, trigger = false, time.Time{}
		switch {
		case res.Deferred:
			schedule(d.repairs.next())
		case errors.Is(res.Err, policy.ErrStale):
			schedule(time.Now()) // the snapshot is outdated: resync at once
		case res.Err != nil:
			schedule(time.Now().Add(retryAfter))
		}
		if !ready && res.Err == nil {
			ready = true
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
		}
		if d.opts.OnSync != nil {
			d.opts.OnSync(res)
		}
	}
}

// ownEcho tells the notification of a rule or route uplinkd itself just
// added: it needs no pass. Deletions of our objects still do (someone may
// have removed them), and so does everything else.
func ownEcho(ev watcher.Event) bool {
	return (ev.Kind == watcher.KindRoute || ev.Kind == watcher.KindRule) && !ev.Deleted && ev.Protocol == policy.Protocol
}

func (d *Daemon) doReload() error {
	cfg, err := LoadConfig(d.opts.ConfigPath)
	if err == nil {
		// An empty or truncated file must not take the gateway offline.
		err = cfg.CheckRunnable()
	}
	if err == nil && (cfg.Firewall.Backend != d.cfg.Firewall.Backend || cfg.Firewall.IPTablesVariant != d.cfg.Firewall.IPTablesVariant) {
		err = fmt.Errorf("%s: [firewall] backend and iptables_variant cannot change on reload; restart uplinkd", cfg.Path)
	}
	if err != nil {
		d.log.Error("config reload failed; keeping the running config", "event", "config-reload", "reason", err.Error())
		return err
	}
	logConfigWarnings(d.log, cfg)
	d.forgetMovedMarks(d.cfg, cfg)
	d.cfg = cfg
	d.syncRuntimes(cfg)
	d.svcChecker().Update(backendcheck.Specs(cfg))
	d.log.Info("config reloaded", "event", "config-reload", "path", cfg.Path)
	return nil
}

// sync is one reconcile pass: observe → compute → diff → apply.
func (d *Daemon) sync(trigger time.Time) SyncResult {
	res := SyncResult{Trigger: trigger, Start: time.Now()}
	obs, err := d.kernel.Snapshot()
	if err != nil {
		res.Err, res.End = err, time.Now()
		d.log.Error("snapshot failed", "event", "apply", "reason", err.Error())
		return res
	}
	now := time.Now()
	links := policy.LinkStates(d.cfg, obs)
	desired := policy.ComputeFrom(d.cfg, obs, links, d.feedLinks(links, now))
	if obs.Sysctls, err = d.kernel.ReadSysctls(desired.SysctlKeys()); err != nil {
		d.log.Warn("reading sysctls", "reason", err.Error())
	}
	res.Desired = desired
	changes := policy.Diff(desired, obs)
	d.logTransitions(desired.Uplinks)

	changes = d.dropConflicts(changes)
	if n := policy.Repairs(changes, d.lastApplied); n > 0 {
		if d.repairs.take() {
			d.log.Warn("undoing a change someone else made to what uplinkd keeps", "event", "apply", "reason", "repair", "repairs", n)
		} else {
			// Out of repair tokens: hold the repairs back, but never the
			// rest of the pass (a failover must not wait for a fight).
			res.Deferred = true
			applied := d.lastApplied
			changes = slices.DeleteFunc(changes, func(c policy.Change) bool { return policy.IsRepair(c, applied) })
			d.log.Warn("someone keeps changing what uplinkd keeps; holding off the repair",
				"event", "apply", "reason", "repair rate limit", "repairs", n)
		}
	}
	d.forgetStaleGateways(desired.Uplinks, obs)
	if len(changes) > 0 {
		res.Err = d.kernel.Apply(changes, obs)
	}
	// NAT follows the addresses of this very pass, then the connections
	// bound to an old address or a dead uplink go, so LAN hosts reconnect
	// through what is there now instead of hanging.
	rs := firewall.Compute(firewall.Input{Config: d.cfg, Uplinks: desired.Uplinks, Healthy: d.healthyBackends()})
	fwChanged, err := d.fw.Sync(rs)
	if err != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("firewall: %w", err))
	}
	res.FirewallChanged = fwChanged
	d.flushConntrack()
	res.End = time.Now()
	d.afterApply(links, now)
	d.fireHooks()
	res.Changes = changes
	if res.Err == nil && !res.Deferred {
		d.lastApplied = desired.AppliedKeys()
	}
	if fwChanged {
		d.log.Info("firewall applied", "event", "apply", "backend", d.cfg.Firewall.Backend)
	}
	if len(changes) > 0 {
		cmds := make([]string, len(changes))
		for i, c := range changes {
			cmds[i] = c.Command()
		}
		attrs := []any{"event", "apply", "changes", len(changes), "duration", res.End.Sub(res.Start),
			"latency", res.End.Sub(trigger), "commands", cmds}
		switch {
		case errors.Is(res.Err, policy.ErrStale):
			d.log.Info("kernel changed during the pass; resyncing", append(attrs, "reason", res.Err.Error())...)
		case res.Err != nil:
			d.log.Error("apply failed (will retry)", append(attrs, "reason", res.Err.Error())...)
		default:
			d.log.Info("applied", attrs...)
		}
		_, _ = daemon.SdNotify(false, "STATUS="+statusLine(desired.Uplinks))
	}
	return res
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
// Hook events it finds run after the pass has applied its changes.
func (d *Daemon) logTransitions(states []policy.UplinkState) {
	for _, st := range states {
		old, seen := d.lastStates[st.Name]
		d.lastStates[st.Name] = st
		rt := d.runtimes[st.Name]
		attrs := []any{"uplink", st.Name, "iface", st.Iface}
		// Any address change (lost, gained, replaced) or a failure clears the
		// uplink's conntrack entries after this pass's firewall sync: an entry
		// made in the instant between the route change and the SNAT rewrite
		// would otherwise keep a NAT binding to an address that is gone.
		if seen && (st.Addr != old.Addr || (old.Usable && !st.Usable)) {
			d.ctFlush = append(d.ctFlush, d.uplinkIndex(st.Name))
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

// flushConntrack deletes, inside the kernel and by the uplink's connection
// mark, the conntrack entries of uplinks whose address changed or that
// failed this pass.
func (d *Daemon) flushConntrack() {
	for _, i := range d.ctFlush {
		if i < 0 {
			continue
		}
		u := d.cfg.Uplinks[i]
		n, err := d.fw.DeleteConntrackByMark(firewall.UplinkMark(i), firewall.UplinkMarkMask)
		if err != nil {
			d.log.Warn("deleting conntrack entries", "event", "conntrack", "uplink", u.Name, "iface", u.Interface, "reason", err.Error())
			continue
		}
		d.log.Info("conntrack entries of the uplink deleted", "event", "conntrack", "uplink", u.Name, "iface", u.Interface, "entries", n)
	}
	d.ctFlush = d.ctFlush[:0]
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
func (d *Daemon) firewallRepair(pending *bool, trigger *time.Time, schedule func(time.Time)) {
	intact, err := d.fw.Check()
	if err != nil {
		d.log.Warn("firewall check failed", "reason", err.Error())
	}
	if intact || *pending {
		return
	}
	if !d.repairs.take() {
		d.log.Warn("owned firewall state keeps changing; holding off the repair", "event", "apply", "reason", "repair rate limit")
		schedule(d.repairs.next())
		return
	}
	d.log.Warn("owned firewall state changed by someone else; restoring", "event", "apply", "reason", "repair", "backend", d.cfg.Firewall.Backend)
	*pending, *trigger = true, time.Now()
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

// tokenBucket is a tiny limiter: burst tokens, one back every refill.
type tokenBucket struct {
	tokens float64
	burst  float64
	refill time.Duration
	last   time.Time
}

func newTokenBucket(burst int, refill time.Duration) *tokenBucket {
	return &tokenBucket{tokens: float64(burst), burst: float64(burst), refill: refill, last: time.Now()}
}

func (b *tokenBucket) fill() {
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.last))/float64(b.refill))
	b.last = now
}

func (b *tokenBucket) take() bool {
	b.fill()
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// next is when the next token will be available.
func (b *tokenBucket) next() time.Time {
	b.fill()
	return b.last.Add(time.Duration((1 - b.tokens) * float64(b.refill)))
}
