// Package backendcheck checks the health of [[service]] backends: a TCP
// connect from the router to every backend each interval, with down/up
// counts in a row, so that the firewall puts only healthy backends in a
// service's set. It observes and reports; the reconcile pass reads Healthy
// and writes the firewall.
package backendcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// Spec is the check of one service's backends.
type Spec struct {
	Service  string
	Backends []netip.AddrPort
	// Unchecked: the service's check is off. Its backends are always in
	// the set and Healthy leaves it out; Status lists it as unchecked.
	Unchecked bool
	// Port is the TCP port checked on every backend; 0: its own port.
	Port uint16
	// Iface, if set, is the device the checks are bound to (the LAN
	// interface, when the backends are known to be on the LAN).
	Iface    string
	Interval time.Duration
	Timeout  time.Duration
	Down, Up int
}

// key identifies the check of backend a of s.
func (s Spec) key(a netip.AddrPort) key {
	return key{s.Service, a, s.Port, s.Iface, s.Interval, s.Timeout, s.Down, s.Up}
}

// Specs returns one Spec per [[service]]; those whose [service.check] is
// off are Unchecked.
func Specs(cfg *policy.Config) []Spec {
	var out []Spec
	for _, s := range cfg.Services {
		sp := Spec{Service: s.Name, Port: s.Check.Port, Interval: s.Check.Interval, Timeout: s.Check.Timeout,
			Down: s.Check.Down, Up: s.Check.Up, Unchecked: !s.Check.Enabled}
		if len(cfg.LAN.Networks) > 0 {
			// The loader keeps the backends inside the LAN networks.
			sp.Iface = cfg.LAN.Interface
		}
		for _, b := range s.Backends {
			sp.Backends = append(sp.Backends, b.Address)
		}
		out = append(out, sp)
	}
	return out
}

// DialFunc tries one backend (from the device iface, when set); nil means
// healthy. It must return by the context's deadline.
type DialFunc func(ctx context.Context, iface string, addr netip.AddrPort) error

// Options configure a Checker.
type Options struct {
	// NetNS is the namespace fd to connect from (<= 0: the current one).
	NetNS  int
	Logger *slog.Logger
	// Notify is called (from a checker goroutine, never under its lock)
	// whenever the healthy set of a service changes; it must not block:
	// the daemon makes it a non-blocking send that triggers a pass.
	Notify func()
	// Dial replaces the TCP connect (tests).
	Dial DialFunc
}

// BackendStatus is one backend's health for `uplinkd status`.
type BackendStatus struct {
	Address netip.AddrPort `json:"address"`
	Healthy bool           `json:"healthy"`
	// Checked is false until the first check finished.
	Checked bool `json:"checked"`
	// Since is when Healthy last changed (zero: never).
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// ServiceStatus is one [[service]].
type ServiceStatus struct {
	Service string `json:"service"`
	// Checked is false when the service's check is off.
	Checked  bool            `json:"checked"`
	Backends []BackendStatus `json:"backends"`
}

// Checker runs one goroutine per checked backend. Methods are safe for
// concurrent use.
type Checker struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	specs    []Spec
	backends map[key]*backend // guarded by mu
	wg       sync.WaitGroup
	closed   bool
}

// key identifies a backend's check: a changed check restarts it.
type key struct {
	service  string
	addr     netip.AddrPort
	port     uint16
	iface    string
	interval time.Duration
	timeout  time.Duration
	down, up int
}

type backend struct {
	key    key
	cancel context.CancelFunc
	state  state
}

// state is the up/down counting of one backend, a pure state machine.
type state struct {
	healthy, checked bool
	fails, succs     int
	since            time.Time
	lastErr          string
}

// observe records one check result and reports whether the backend moved
// in or out of the set. A backend starts healthy (a daemon restart must not
// empty a working service); Down failures in a row take it out and Up
// successes in a row bring it back.
func (s *state) observe(err error, down, up int, now time.Time) bool {
	s.checked = true
	if err == nil {
		s.fails, s.lastErr = 0, ""
		s.succs++
		if !s.healthy && s.succs >= up {
			s.healthy, s.since = true, now
			return true
		}
		return false
	}
	s.succs, s.lastErr = 0, err.Error()
	s.fails++
	if s.healthy && s.fails >= down {
		s.healthy, s.since = false, now
		return true
	}
	return false
}

// New starts checking specs.
func New(specs []Spec, opts Options) *Checker {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Notify == nil {
		opts.Notify = func() {}
	}
	if opts.Dial == nil {
		ns := opts.NetNS
		opts.Dial = func(ctx context.Context, iface string, addr netip.AddrPort) error {
			return probe.Connect(ctx, ns, iface, addr)
		}
	}
	c := &Checker{opts: opts, log: opts.Logger, backends: map[key]*backend{}}
	c.Update(specs)
	return c
}

// Update replaces the checks (after a config reload). Backends whose check
// is unchanged keep their state and goroutine; others start healthy.
func (c *Checker) Update(specs []Spec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.specs = slices.Clone(specs)
	want := map[key]bool{}
	for _, s := range specs {
		if s.Unchecked {
			continue
		}
		for _, a := range s.Backends {
			k := s.key(a)
			want[k] = true
			if _, ok := c.backends[k]; ok {
				continue
			}
			ctx, cancel := context.WithCancel(context.Background())
			b := &backend{key: k, cancel: cancel, state: state{healthy: true}}
			c.backends[k] = b
			c.wg.Add(1)
			go c.run(ctx, b)
		}
	}
	for k, b := range c.backends {
		if !want[k] {
			b.cancel()
			delete(c.backends, k)
		}
	}
}

func (c *Checker) run(ctx context.Context, b *backend) {
	defer c.wg.Done()
	k := b.key
	target := k.addr
	if k.port != 0 {
		target = netip.AddrPortFrom(k.addr.Addr(), k.port)
	}
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, k.timeout)
		err := c.opts.Dial(cctx, k.iface, target)
		// Read before cancel, which sets every context's Err: only a dial
		// that ran out of time is "no answer"; a refusal says so.
		timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && timedOut {
			err = fmt.Errorf("no answer within %s", k.timeout)
		}
		c.mu.Lock()
		changed := b.state.observe(err, k.down, k.up, time.Now())
		healthy := b.state.healthy
		c.mu.Unlock()
		if changed {
			attrs := []any{"event", "backend-down", "service", k.service, "backend", k.addr.String()}
			if healthy {
				attrs[1] = "backend-up"
				c.log.Info("service backend healthy", attrs...)
			} else {
				c.log.Warn("service backend failed its check", append(attrs, "reason", err.Error())...)
			}
			c.opts.Notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Healthy returns, per checked service, its healthy backends in
// configuration order (firewall.Input.Healthy).
func (c *Checker) Healthy() map[string][]netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]netip.AddrPort{}
	for _, s := range c.specs {
		if s.Unchecked {
			continue // the firewall keeps all its backends
		}
		up := []netip.AddrPort{}
		for _, a := range s.Backends {
			if b := c.backends[s.key(a)]; b != nil && b.state.healthy {
				up = append(up, a)
			}
		}
		out[s.Service] = up
	}
	return out
}

// Status returns every service with its backends' health; the backends of
// an unchecked service are healthy and not Checked.
func (c *Checker) Status() []ServiceStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ServiceStatus
	for _, s := range c.specs {
		ss := ServiceStatus{Service: s.Service, Checked: !s.Unchecked}
		for _, a := range s.Backends {
			if s.Unchecked {
				ss.Backends = append(ss.Backends, BackendStatus{Address: a, Healthy: true})
				continue
			}
			b := c.backends[s.key(a)]
			if b == nil {
				continue
			}
			ss.Backends = append(ss.Backends, BackendStatus{Address: a, Healthy: b.state.healthy, Checked: b.state.checked,
				Since: b.state.since, LastError: b.state.lastErr})
		}
		out = append(out, ss)
	}
	return out
}

// Close stops every check and waits for the goroutines.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	for k, b := range c.backends {
		b.cancel()
		delete(c.backends, k)
	}
	c.mu.Unlock()
	c.wg.Wait()
}
