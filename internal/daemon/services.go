package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

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

// serviceChecks is the component that runs the checker: it owns it and the
// channel its changes reach the loop on.
type serviceChecks struct {
	quiet
	open    ServiceChecksFunc // nil: nothing is checked, every backend stays in the set
	cfg     func() *policy.Config
	changed chan struct{} // a healthy set changed; the loop asks for a pass

	mu sync.Mutex // guards c: the status and metrics read it from other goroutines
	c  ServiceChecks
}

func newServiceChecks(start ServiceChecksFunc, cfg func() *policy.Config) *serviceChecks {
	return &serviceChecks{open: start, cfg: cfg, changed: make(chan struct{}, 1)}
}

// start starts checking the backends of the current config (once, from
// Run).
func (s *serviceChecks) start(context.Context) error {
	if s.open == nil {
		return nil
	}
	c := s.open(backendcheck.Specs(s.cfg()), func() {
		select {
		case s.changed <- struct{}{}:
		default: // a pass is already pending
		}
	})
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
	return nil
}

// stop ends the checks and waits for their goroutines.
func (s *serviceChecks) stop() {
	if c := s.checker(); c != nil {
		c.Close()
	}
}

// reload follows a reloaded config.
func (s *serviceChecks) reload(cfg *policy.Config) {
	if c := s.checker(); c != nil {
		c.Update(backendcheck.Specs(cfg))
	}
}

// checker is the checker (nil before start), for any goroutine.
func (s *serviceChecks) checker() ServiceChecks {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

// healthyBackends is firewall.Input.Healthy for this pass; nil (every
// backend in the set) without checks.
func (d *Daemon) healthyBackends() map[string][]netip.AddrPort {
	if c := d.svc.checker(); c != nil {
		return c.Healthy()
	}
	return nil
}

// ServiceStatus is the services section of the status (control.Status
// Services): every [[service]] with its backends' health; nil before Run
// started the checks. Safe to call from any goroutine.
func (d *Daemon) ServiceStatus() []control.Service {
	c := d.svc.checker()
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
