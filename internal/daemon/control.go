package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/internal/metrics"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/publish"
)

// extras is the wiring around the reconcile loop: the control socket and
// the status snapshot it serves, the address publishers, metrics, the LAN
// DHCP server and the config-file watch. The loop owns every field except
// those documented as shared.
type extras struct {
	sock *control.Socket // nil: no control socket (New without Open, or "-")
	ctl  chan ctlMsg     // control requests that need the loop

	// status is the snapshot the loop publishes after each pass; the
	// control socket's goroutines only ever read it.
	status atomic.Pointer[control.Status]

	started      time.Time
	configLoaded time.Time
	lastPass     time.Time // when the last pass ended (zero: none yet)
	passes       uint64
	repairs      uint64
	resyncs      int
	states       map[string]stateSince // the status state of each uplink, and since when

	// mu guards info: reconnectors' and publishers' goroutines write to it.
	mu   sync.Mutex
	info map[string]*uplinkInfo

	metrics     *metrics.Registry // nil: metrics off (every call a no-op)
	metricsAddr net.Addr          // the bound address, for tests

	pub  atomic.Pointer[publishing]
	dhcp *dhcpRuntime
	// dhcpStatus is read by the control socket's goroutines.
	dhcpStatus atomic.Pointer[dhcpRuntime]
	// radv is the router advertisement sender (radv.go); the loop starts
	// and stops it, the status reads it.
	radv    atomic.Pointer[radvRuntime]
	lan     lanSeen
	hookDir string // the hook directory in use ("" when it does not exist)
	// listening: control_socket, control_group and metrics_listen as
	// started; a reload cannot move them.
	listening [3]string
	// cleanStop: Run ends because its caller's context ended.
	cleanStop bool
}

type stateSince struct {
	state control.UplinkState
	since time.Time
}

// uplinkInfo is what other goroutines than the loop tell about an uplink.
type uplinkInfo struct {
	lastEvent  string
	lastAt     time.Time
	reconnects int
	hooks      []hooks.HookSpec   // the uplink's hooks, for events fired outside the loop
	reconn     *hooks.Reconnector // its reconnector (nil: none), for the status
}

// ctlMsg is a control request handed to the loop.
type ctlMsg struct {
	reconnect string         // the uplink to reconnect now
	event     control.Event  // an interface poke: resync
	kick      string         // this uplink's reconnect attempt ended: a pass re-evaluates the need
	drain     *control.Drain // drain or undrain an uplink
	delegated *control.Event // a delegated prefix learned or ended
	done      chan error
}

// initExtras is called by New.
func (d *Daemon) initExtras() error {
	// Buffered: a finished reconnect attempt kicks the loop without waiting.
	d.x.ctl = make(chan ctlMsg, 8)
	d.x.info = map[string]*uplinkInfo{}
	d.x.states = map[string]stateSince{}
	d.x.started = time.Now()
	d.x.configLoaded = d.x.started
	if err := CheckConfig(d.cfg); err != nil {
		return err
	}
	d.setUplinkHooks(d.cfg)
	d.x.status.Store(d.buildStatus(time.Time{}))
	// The state before the first pass is no state: the first pass's
	// verdict is not a transition.
	clear(d.x.states)
	return nil
}

// ConfigError is a config problem found beyond the loader's checks (a
// refused hook directory, a publisher whose secret file is unusable):
// `uplinkd check` reports it and `uplinkd run` exits with EX_CONFIG.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// IsConfigError reports whether err is (or wraps) a *ConfigError.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// CheckConfig runs the checks of cfg that need files besides the config
// itself: the hook directory's owners and modes, the publishers' secret
// files, the DHCP spec. `uplinkd check`, `run` and every reload call it.
func CheckConfig(cfg *policy.Config) error {
	var errs []error
	if _, err := hooks.CheckHookDir(cfg.Daemon.HookDir); err != nil {
		errs = append(errs, fmt.Errorf("%s: [daemon] hook_dir: %w", cfg.Path, err))
	}
	if specs := publishSpecs(cfg); len(specs) > 0 {
		m, err := publish.NewManager(specs, publish.Options{})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: [[uplink.publish]]: %w", cfg.Path, err))
		} else {
			m.Close()
		}
	}
	if _, _, err := dhcpSpec(cfg, 0); err != nil {
		errs = append(errs, fmt.Errorf("%s: [lan.dhcp]: %w", cfg.Path, err))
	}
	if err := errors.Join(errs...); err != nil {
		return &ConfigError{err}
	}
	return nil
}

// checkExtras is the reload's CheckConfig.
func (d *Daemon) checkExtras(cfg *policy.Config) error { return CheckConfig(cfg) }

// listenControl opens the control socket of cfg (or opts.ControlSocket).
func listenControl(cfg *policy.Config, opts Options) (*control.Socket, error) {
	path := cfg.Daemon.ControlSocket
	if opts.ControlSocket != "" {
		path = opts.ControlSocket
	}
	if path == "-" || path == "" {
		return nil, nil
	}
	group := -1
	if cfg.Daemon.ControlGroup != "" {
		group = int(cfg.Daemon.ControlGID)
	}
	sock, err := control.Listen(control.Options{Path: path, Group: group, Logger: opts.Logger})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return sock, nil
}

func closeSocket(sock *control.Socket) {
	if sock != nil {
		sock.Close()
	}
}

// serveControl serves the control socket (if any) until ctx ends; Serve
// then closes it.
func (d *Daemon) serveControl(ctx context.Context) error {
	if sock := d.x.sock; sock != nil {
		h := ctlHandler{d}
		d.wg.Go(func() { _ = sock.Serve(ctx, h) })
	}
	return nil
}

// stopPublishing ends the publishers (publish.go).
func (d *Daemon) stopPublishing() {
	if p := d.x.pub.Swap(nil); p != nil {
		p.m.Close()
	}
}

// reloadExtras follows a reload that succeeded; the components follow it
// (supervisor.reload) between the hooks and the drained uplinks.
func (d *Daemon) reloadExtras(cfg *policy.Config) {
	d.x.configLoaded = time.Now()
	if listenKeys(cfg) != d.x.listening {
		d.log.Warn("control_socket, control_group and metrics_listen take effect on restart; keeping the running ones",
			"event", "config-reload", "reason", "listening sockets are opened at start")
	}
	d.setHookDir(cfg)
	d.setUplinkHooks(cfg)
	d.sup.reload(cfg)
	d.noteUnknownDrained(cfg)
	for name := range d.x.states {
		if cfg.UplinkByName(name) == nil {
			delete(d.x.states, name)
			d.x.metrics.RemoveUplink(name)
		}
	}
}

func listenKeys(cfg *policy.Config) [3]string {
	return [3]string{cfg.Daemon.ControlSocket, cfg.Daemon.ControlGroup, cfg.Daemon.MetricsListen}
}

// setHookDir gives the hook runner [daemon] hook_dir when the directory
// exists. The default one usually does not, and then events of uplinks
// without [[uplink.hook]] cost nothing; a directory created later is used
// from the next reload on (files added to an existing one run at once).
func (d *Daemon) setHookDir(cfg *policy.Config) {
	d.x.hookDir = ""
	if fi, err := os.Stat(cfg.Daemon.HookDir); err == nil && fi.IsDir() {
		d.x.hookDir = cfg.Daemon.HookDir
	}
	d.hookRunner.SetHookDir(d.x.hookDir)
}

// setUplinkHooks shares the uplinks' hook specs with the goroutines that
// fire events outside the loop (reconnect attempts, publish results).
func (d *Daemon) setUplinkHooks(cfg *policy.Config) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	keep := map[string]bool{}
	for i := range cfg.Uplinks {
		u := &cfg.Uplinks[i]
		keep[u.Name] = true
		in := d.x.info[u.Name]
		if in == nil {
			in = &uplinkInfo{}
			d.x.info[u.Name] = in
		}
		in.hooks = hooks.HookSpecsFor(u)
	}
	for name := range d.x.info {
		if !keep[name] {
			delete(d.x.info, name)
		}
	}
}

// noteUplinkEvent records the last event of an uplink for the status.
// Safe from any goroutine.
func (d *Daemon) noteUplinkEvent(uplink, event string) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	if in := d.x.info[uplink]; in != nil {
		in.lastEvent, in.lastAt = event, time.Now()
	}
}

// fireOutside fires a hook event from a goroutine other than the loop.
func (d *Daemon) fireOutside(ev hooks.HookEvent) {
	d.x.mu.Lock()
	var specs []hooks.HookSpec
	if in := d.x.info[ev.Uplink]; in != nil {
		in.lastEvent, in.lastAt = ev.Event, time.Now()
		specs = in.hooks
	}
	d.x.mu.Unlock()
	d.hookRunner.Fire(specs, ev)
}

// watchReconnects makes every finished reconnect attempt a `reconnect`
// hook event, a status count and a metric.
func (d *Daemon) watchReconnects(rt *uplinkRuntime) {
	name := rt.name
	rt.manualUntil = time.Time{} // a new reconnector has no attempt under way
	d.x.mu.Lock()
	in := d.x.info[name]
	if in == nil { // an uplink a reload adds: setUplinkHooks follows
		in = &uplinkInfo{}
		d.x.info[name] = in
	}
	in.reconn = rt.reconn
	d.x.mu.Unlock()
	rt.reconn.OnAttempt(func(ev hooks.HookEvent) {
		d.x.mu.Lock()
		if in := d.x.info[name]; in != nil {
			in.reconnects++
		}
		d.x.mu.Unlock()
		d.x.metrics.Reconnect(name)
		d.fireOutside(ev)
		// A pass re-evaluates what the uplink needs now: a reconnect asked
		// for on the control socket for a working link is a single
		// attempt, not the start of a backoff cycle.
		select {
		case d.x.ctl <- ctlMsg{kick: name}:
		default:
		}
	})
}

// noteResync counts watcher resyncs after the first (netlink overflows).
func (d *Daemon) noteResync() {
	d.x.resyncs++
	if d.x.resyncs > 1 {
		d.x.metrics.Overflow()
	}
}

// countRepair counts a pass that undoes someone else's change.
func (d *Daemon) countRepair() {
	d.x.repairs++
	d.x.metrics.Repair()
}

// afterPass counts the pass; the components then publish what it found
// (supervisor.afterPass): router advertisements, the status snapshot,
// publisher addresses, the DHCP server's link.
func (d *Daemon) afterPass(res SyncResult) {
	d.x.passes++
	if res.Repaired {
		d.countRepair()
	}
	d.x.metrics.PassDone(res.End.Sub(res.Start), res.Err != nil)
	d.x.lastPass = res.End
	d.sup.afterPass(res)
}

// publishAddresses hands the publishers the addresses of the status the
// pass published.
func (d *Daemon) publishAddresses() {
	st := d.x.status.Load()
	if p := d.x.pub.Load(); p != nil && st != nil {
		for _, u := range st.Uplinks {
			p.m.Update(u.Name, u.Address)
			if u.IPv6 != nil { // ipv6 on: its family-ipv6 publishers
				p.m.UpdateIPv6(u.Name, u.IPv6.Address)
			}
		}
	}
}

// publishStatus rebuilds the status snapshot (and the uplink metrics) from
// the loop's state: after every pass and every finished probe round.
func (d *Daemon) publishStatus() *control.Status {
	st := d.buildStatus(d.x.lastPass)
	d.x.status.Store(st)
	return st
}

// buildStatus computes the status snapshot from the loop's own state.
func (d *Daemon) buildStatus(lastPass time.Time) *control.Status {
	st := &control.Status{
		V: control.Version,
		Daemon: control.Daemon{
			Version: d.opts.Version, PID: os.Getpid(), Started: d.x.started.UTC(),
			Config: d.cfg.Path, ConfigLoaded: d.x.configLoaded.UTC(),
			Passes: d.x.passes, Repairs: d.x.repairs,
			Error: d.drain.loadErr, DrainedUnknown: slices.Clone(d.drain.unknown),
		},
		Uplinks: make([]control.Uplink, 0, len(d.cfg.Uplinks)),
	}
	if !lastPass.IsZero() {
		st.Daemon.LastPass = lastPass.UTC()
	}
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	for i := range d.cfg.Uplinks {
		u := &d.cfg.Uplinks[i]
		ls, seen := d.rec.lastStates[u.Name]
		cu := control.Uplink{
			Name: u.Name, Interface: u.Interface, Kind: string(u.Kind), State: control.StateDown,
			Table: u.Table, Tier: u.Tier, Weight: u.Weight, Reason: "no pass yet",
		}
		if seen {
			cu.Reason, cu.Address, cu.Default = ls.Reason, ls.Addr, ls.Active
			cu.Gateway = ls.Gateway
			if !cu.Gateway.IsValid() {
				cu.Gateway = ls.Peer
			}
		}
		rt := d.runtimes[u.Name]
		probe := metrics.Probe{Loss: -1, RTT: -1, Jitter: -1} // unknown
		switch linkOK := seen && ls.Present && ls.Carrier && ls.Addr.IsValid(); {
		case !linkOK:
		case rt == nil || rt.health == nil:
			cu.State = control.StateUp
		default:
			cu.State = healthState(rt.health)
			// A confirmed traffic outage says so: the user sees why it
			// failed within a second, not "probes failing".
			if r := rt.health.Reason(); cu.State == control.StateFailed && strings.HasPrefix(r, policy.ReasonTrafficConfirmed) {
				cu.Reason = r
			}
			cu.Window = healthWindow(rt.health)
			if last := rt.last; last != nil {
				// The last finished round of the running prober.
				loss := last.loss()
				cu.Loss, probe.Loss = &loss, loss
				if last.hasRTT {
					cu.RTTms, probe.RTT = millis(last.rtt), last.rtt
				}
				if last.hasJitter {
					cu.JitterMs, probe.Jitter = millis(last.jitter), last.jitter
				}
			}
		}
		ipv6State, probe6 := "", metrics.Probe{Loss: -1, RTT: -1, Jitter: -1}
		if u.IPv6 {
			cu.IPv6, probe6 = statusIPv6(ls.IPv6, seen, rt)
			ipv6State = string(cu.IPv6.State)
		}
		prev, ok := d.x.states[u.Name]
		if !ok || prev.state != cu.State {
			if ok {
				d.x.metrics.Transition(u.Name)
			}
			prev = stateSince{cu.State, time.Now()}
			d.x.states[u.Name] = prev
		}
		cu.Since = prev.since.UTC()
		if in := d.x.info[u.Name]; in != nil {
			cu.Reconnects = in.reconnects
			if in.lastEvent != "" {
				cu.LastEvent = &control.LastEvent{Name: in.lastEvent, At: in.lastAt.UTC()}
			}
			cu.Reconnect = reconnectStatus(in.reconn)
		}
		_, cu.Drained = d.drain.set[u.Name]
		if rt != nil && rt.health != nil && cu.State == control.StateUp {
			cu.Degraded, cu.QualityReason = rt.health.Degraded(), rt.health.DegradedReason()
		}
		d.x.metrics.SetUplink(u.Name, string(cu.State), probe)
		d.x.metrics.SetDrained(u.Name, cu.Drained)
		d.x.metrics.SetUplinkIPv6(u.Name, ipv6State, probe6)
		d.x.metrics.SetDegraded(u.Name, cu.Degraded)
		st.Uplinks = append(st.Uplinks, cu)
	}
	st.LAN = d.lan6Status()
	return st
}

// reconnectStatus is what r does now, for the status; nil for no
// reconnector.
func reconnectStatus(r *hooks.Reconnector) *control.Reconnect {
	if r == nil {
		return nil
	}
	rs := r.State()
	return &control.Reconnect{State: rs.State, Since: utc(rs.Since), PID: rs.PID, Until: utc(rs.Until)}
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// freshReconnects replaces the reconnect states of a status snapshot (as of
// the last pass) by the current ones: a dial starts and a pppd exits
// between passes. The snapshot is shared, so the uplinks are copied.
func (d *Daemon) freshReconnects(st *control.Status) {
	st.Uplinks = slices.Clone(st.Uplinks)
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	for i := range st.Uplinks {
		if in := d.x.info[st.Uplinks[i].Name]; in != nil {
			st.Uplinks[i].Reconnect = reconnectStatus(in.reconn)
		}
	}
}

// millis is d in milliseconds, for the status.
// healthState is the status state of a health machine's verdict.
func healthState(h *policy.HealthMachine) control.UplinkState {
	switch h.State() {
	case policy.HealthUp:
		return control.StateUp
	case policy.HealthFailed:
		return control.StateFailed
	}
	return control.StateChecking
}

// statusIPv6 is the status of an uplink's IPv6 side from the last pass's
// verdict and its IPv6 health machine, and its last probe round for the
// metrics.
func statusIPv6(v policy.UplinkState6, seen bool, rt *uplinkRuntime) (*control.UplinkIPv6, metrics.Probe) {
	out := &control.UplinkIPv6{State: control.StateDown, Reason: "no pass yet"}
	probe := metrics.Probe{Loss: -1, RTT: -1, Jitter: -1} // unknown
	if !seen {
		return out, probe
	}
	out.Reason, out.Address, out.Gateway, out.Default = v.Reason, v.Addr, v.Gateway, v.Active
	linkOK := v.Addr.IsValid() && (v.Usable || v.Reason == "probes failing")
	switch {
	case !linkOK:
	case rt == nil || rt.v6.health == nil:
		out.State = control.StateUp
	default:
		out.State = healthState(rt.v6.health)
		if last := rt.v6.last; last != nil {
			loss := last.loss()
			out.Loss, probe.Loss = &loss, loss
			if last.hasRTT {
				out.RTTms, probe.RTT = millis(last.rtt), last.rtt
			}
			if last.hasJitter {
				out.JitterMs, probe.Jitter = millis(last.jitter), last.jitter
			}
		}
	}
	return out, probe
}

func millis(d time.Duration) *float64 {
	ms := float64(d) / float64(time.Millisecond)
	return &ms
}

// onControl handles a control request in the loop; true when a pass is due.
func (d *Daemon) onControl(m ctlMsg) bool {
	if m.kick != "" {
		if rt := d.runtimes[m.kick]; rt != nil {
			rt.manualUntil = time.Time{}
		}
		return true
	}
	if m.drain != nil {
		changed, err := d.onDrain(*m.drain)
		m.done <- err
		return changed
	}
	if m.delegated != nil {
		changed, err := d.onDelegated(*m.delegated)
		if m.done != nil {
			m.done <- err
		} else if err != nil {
			// Queued before a reload took the interface away.
			d.log.Warn("delegation event not used", "event", "delegated", "iface", m.delegated.Iface, "reason", err.Error())
		}
		if err == nil {
			d.saveDelegated() // a renewal's new lifetimes too
			if !changed {
				d.publishStatus() // no pass follows: the lifetimes show now
			}
		}
		return changed
	}
	if m.reconnect == "" {
		// An interface poke from a hook script: only a trigger. What
		// happened to the link is in the kernel mirror's link history,
		// which the netlink notifications themselves wrote.
		d.log.Info("event from a hook script; resyncing", "event", "control-event", "iface", m.event.Iface, "reason", string(m.event.State))
		return true
	}
	rt := d.runtimes[m.reconnect]
	var err error
	switch {
	case rt == nil:
		err = fmt.Errorf("no uplink named %q", m.reconnect)
	case rt.reconn == nil:
		err = fmt.Errorf("uplink %s has no [uplink.reconnect] command", m.reconnect)
	case d.haReconnectRefused(m.reconnect) != nil:
		// An exclusive uplink is dialled by the VRRP master only.
		err = d.haReconnectRefused(m.reconnect)
	default:
		st := d.rec.lastStates[m.reconnect]
		need, what := hooks.NeedDial, "dial"
		if st.Present && st.Carrier && st.Addr.IsValid() {
			need, what = hooks.NeedRestart, "restart"
		}
		d.log.Info("reconnect requested on the control socket", "event", "reconnect", "uplink", m.reconnect, "reason", "control request: "+what)
		// Until the attempt ends (or could have: its timeout), passes leave
		// the need alone: a link that works would otherwise cancel the
		// attempt before its command ran.
		timeout := rt.reconnSpec.Timeout
		if timeout <= 0 {
			timeout = hooks.DefaultTimeout
		}
		rt.manualUntil = d.clock.Now().Add(timeout)
		rt.reconn.Set(need)
	}
	m.done <- err
	return false
}

// ctlHandler is the daemon's control.Handler. It runs on the socket's
// goroutines: it reads the snapshot or hands requests to the loop.
type ctlHandler struct{ d *Daemon }

func (h ctlHandler) Status(context.Context) (control.Status, error) {
	st := *h.d.x.status.Load()
	h.d.freshReconnects(&st)
	h.d.addTraffic(&st)
	// The sections other goroutines own are read live, not from the
	// loop's snapshot: backend checks, publishers and the DHCP server
	// change without a pass.
	st.Services = h.d.ServiceStatus()
	st.HA = h.d.HAStatus()
	if p := h.d.x.pub.Load(); p != nil {
		st.Publishers = publisherStatus(p.m.Status())
	}
	if r := h.d.x.dhcpStatus.Load(); r != nil {
		st.DHCP = dhcpStatus(r.srv.Status())
	}
	// The advertisement sender too (it counts what it sends).
	if st.LAN != nil && st.LAN.IPv6 != nil {
		lan, v6 := *st.LAN, *st.LAN.IPv6
		v6.Announce = h.d.radvStatus()
		lan.IPv6 = &v6
		st.LAN = &lan
	}
	return st, nil
}

func (h ctlHandler) send(ctx context.Context, m ctlMsg) error {
	select {
	case h.d.x.ctl <- m:
	case <-ctx.Done():
		return ctx.Err()
	}
	if m.done == nil {
		return nil
	}
	select {
	case err := <-m.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h ctlHandler) Reconnect(ctx context.Context, uplink string) error {
	return h.send(ctx, ctlMsg{reconnect: uplink, done: make(chan error, 1)})
}

func (h ctlHandler) Drain(ctx context.Context, req control.Drain) error {
	return h.send(ctx, ctlMsg{drain: &req, done: make(chan error, 1)})
}

func (h ctlHandler) Reload(ctx context.Context) ([]string, error) {
	err := h.d.Reload(ctx)
	if err == nil || ctx.Err() != nil {
		return nil, err
	}
	var ps policy.Problems
	if errors.As(err, &ps) {
		return ps.Lines(), nil
	}
	return strings.Split(err.Error(), "\n"), nil
}

func (h ctlHandler) Event(ctx context.Context, ev control.Event) error {
	if ev.Role != "" {
		// keepalived's notify script: the role changes in the loop at once
		// (ErrHAOff without [ha]).
		return h.d.SetRole(ctx, string(ev.Role))
	}
	if ev.Delegated != "" {
		// Answered once queued, not once the loop took it: a pass can
		// keep the loop longer than the hook's 90 ms (an iptables pass
		// on a busy box), and a dropped delegation is not repaired until
		// the PD client's next renewal. The interface is checked against
		// the status snapshot, so a hook on the wrong interface still
		// hears so.
		if !h.d.statusHasIface(ev.Iface) {
			return fmt.Errorf("no [[uplink]] has interface %q", ev.Iface)
		}
		return h.send(ctx, ctlMsg{delegated: &ev})
	}
	return h.send(ctx, ctlMsg{event: ev})
}

// statusHasIface reports whether the status snapshot has an uplink on
// iface (safe on the control socket's goroutines).
func (d *Daemon) statusHasIface(iface string) bool {
	st := d.x.status.Load()
	return st != nil && slices.ContainsFunc(st.Uplinks, func(u control.Uplink) bool { return u.Interface == iface })
}
