package daemon

import (
	"log/slog"
	"net/netip"

	"github.com/uplinkd/uplinkd/internal/control"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher/backendcheck"
)

// The [[service]] backend checks, as seen from the loop: the checker runs
// its own goroutines (started by Run, closed before it returns); a change of
// a healthy set is a trigger like a netlink event, and the pass reads the
// sets (firewall.Input.Healthy).

// ServiceChecks is the [[service]] backend checker the loop reads
// (*backendcheck.Checker).
type ServiceChecks interface {
	Healthy() map[string][]netip.AddrPort
	Status() []backendcheck.ServiceStatus
	Update(specs []backendcheck.Spec)
	Close()
}

// ServiceChecksFunc starts the checks of specs; notify (it never blocks)
// asks for a pass when a service's healthy set changed.
type ServiceChecksFunc func(specs []backendcheck.Spec, notify func()) ServiceChecks

// realServiceChecks connects from the namespace fd (0: the daemon's own).
func realServiceChecks(fd int, log *slog.Logger) ServiceChecksFunc {
	return func(specs []backendcheck.Spec, notify func()) ServiceChecks {
		return backendcheck.New(specs, backendcheck.Options{NetNS: fd, Logger: log, Notify: notify})
	}
}

// startServiceChecks starts checking the backends of the current config
// (once, from Run); without Deps.Services nothing is checked and every
// backend stays in the set.
func (d *Daemon) startServiceChecks() {
	if d.deps.Services == nil {
		return
	}
	c := d.deps.Services(backendcheck.Specs(d.cfg), func() {
		select {
		case d.svcChanged <- struct{}{}:
		default: // a pass is already pending
		}
	})
	d.svcMu.Lock()
	d.svc = c
	d.svcMu.Unlock()
}

// stopServiceChecks ends the checks and waits for their goroutines.
func (d *Daemon) stopServiceChecks() {
	if c := d.svcChecker(); c != nil {
		c.Close()
	}
}

// updateServiceChecks follows a reloaded config.
func (d *Daemon) updateServiceChecks(cfg *policy.Config) {
	if c := d.svcChecker(); c != nil {
		c.Update(backendcheck.Specs(cfg))
	}
}

// svcChecker is the checker, for goroutines other than the loop's.
func (d *Daemon) svcChecker() ServiceChecks {
	d.svcMu.Lock()
	defer d.svcMu.Unlock()
	return d.svc
}

// healthyBackends is firewall.Input.Healthy for this pass; nil (every
// backend in the set) without checks.
func (d *Daemon) healthyBackends() map[string][]netip.AddrPort {
	if c := d.svcChecker(); c != nil {
		return c.Healthy()
	}
	return nil
}

// ServiceStatus is the services section of the status (control.Status
// Services): every [[service]] with its backends' health; nil before Run
// started the checks. Safe to call from any goroutine.
func (d *Daemon) ServiceStatus() []control.Service {
	c := d.svcChecker()
	if c == nil {
		return nil
	}
	var out []control.Service
	for _, s := range c.Status() {
		cs := control.Service{Name: s.Service, Checked: s.Checked, Backends: []control.ServiceBackend{}}
		for _, b := range s.Backends {
			cs.Backends = append(cs.Backends, control.ServiceBackend{Address: b.Address, Healthy: b.Healthy, Since: b.Since, LastError: b.LastError})
		}
		out = append(out, cs)
	}
	return out
}
