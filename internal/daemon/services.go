package daemon

import (
	"net/netip"

	"github.com/uplinkd/uplinkd/internal/control"

	"github.com/uplinkd/uplinkd/watcher/backendcheck"
)

// The [[service]] backend checks, as seen from the loop: the checker runs
// its own goroutines (owned by Run: started there, closed before it
// returns); a change of a healthy set is a trigger like a netlink event,
// and the pass reads the sets (firewall.Input.Healthy).

// startServiceChecks starts checking the backends of the current config.
// It is called once from Run; reloads call d.svc.Update.
func (d *Daemon) startServiceChecks() {
	c := backendcheck.New(backendcheck.Specs(d.cfg), backendcheck.Options{
		NetNS:  d.netnsFD(),
		Logger: d.log,
		Notify: func() {
			select {
			case d.svcChanged <- struct{}{}:
			default: // a pass is already pending
			}
		},
	})
	d.svcMu.Lock()
	d.svc = c
	d.svcMu.Unlock()
}

// svcChecker is the checker, for goroutines other than the loop's.
func (d *Daemon) svcChecker() *backendcheck.Checker {
	d.svcMu.Lock()
	defer d.svcMu.Unlock()
	return d.svc
}

// healthyBackends is firewall.Input.Healthy for this pass; nil (every
// backend in the set) before the checks run.
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
