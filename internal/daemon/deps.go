package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/internal/netnsx"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
	"github.com/uplinkd/uplinkd/watcher/probe"
)

// The loop's outside world, as small interfaces defined here where they are
// used: the production pieces (netlink, nftables/iptables, the rtnetlink
// watcher, systemd) satisfy them, and the loop tests drive the same loop with
// fakes as a normal user.

// Kernel is the routing state the loop reads and writes.
type Kernel interface {
	// Snapshot returns the kernel state policy decisions depend on.
	Snapshot() (policy.Observed, error)
	ReadSysctls(keys []string) (map[string]string, error)
	// Apply carries out changes in order; kernel.ErrStale means the kernel
	// changed under the pass (the loop resyncs at once), ENETDOWN that a
	// link was not up yet (its link-up event brings the next pass).
	Apply(changes []policy.Change, obs policy.Observed) error
	// ForgetNeighbor deletes the neighbour entry of ip on dev.
	ForgetNeighbor(dev string, ip netip.Addr, obs policy.Observed) error
	// LinkHistory returns the link history records with after < Seq <= upTo
	// (linklog.History.Between): what happened to the links between two
	// snapshots (Observed.LinkSeq).
	LinkHistory(after, upTo uint64) (recs []linklog.Record, complete bool)
	// SetTables names the routing tables the config reads: a kernel that
	// keeps a mirror (*kernel.Kernel) keeps their routes in full and only
	// the default routes of the others. Set at start and on every reload.
	SetTables(tables []int)
	// SetIPv6 tells whether some uplink has ipv6 on: the mirror reads IPv6
	// state only then.
	SetIPv6(on bool)
	Close() error
}

// Firewall is the part of firewall.Backend the loop uses.
type Firewall interface {
	Sync(rs firewall.Ruleset) (changed bool, err error)
	Check() (intact bool, err error)
	DeleteConntrackByMark(mark, mask uint32) (int, error)
	// Flush removes everything uplinkd owns (--flush-on-exit).
	Flush() error
	// ClearConntrackByMark is DeleteConntrackByMark without the count (one
	// request instead of three): the event path uses it, since a redial
	// waits for the delete.
	firewall.ConntrackClearer
	// ClearConntrack6ByMark deletes only an uplink's IPv6 entries (its IPv6
	// side failed or renumbered while its IPv4 side works).
	firewall.ConntrackClearer6
	// InSync tells, without building anything, that Sync(rs) would change
	// nothing; a backend that cannot tell cheaply answers false. The loop
	// runs a firewall sync with work beside the routing writes, and one
	// without inline.
	firewall.InSyncer
	// ReadTraffic reads the per-uplink counters for status, metrics and
	// the traffic trigger.
	firewall.TrafficReader
	Close() error
}

// EventSource delivers kernel change triggers until ctx is done. Its first
// event (watcher.KindResync) starts the first pass.
type EventSource interface {
	Run(ctx context.Context, out chan<- watcher.Event) error
}

// FirewallMonitor reports, by a non-blocking send on damaged, that someone
// else changed netfilter state uplinkd owns.
type FirewallMonitor interface {
	Watch(ctx context.Context, damaged chan<- struct{}) error
}

// Clock is time for the loop, the health machines and the reconnectors:
// hooks.RealClock in production, a hooks.FakeClock in the loop tests.
type Clock = hooks.Clock

// ProbeFunc runs one uplink's prober until ctx is done (probe.Run).
type ProbeFunc func(ctx context.Context, spec probe.Spec, out chan<- probe.Result) error

// Deps are what New needs besides the config. Kernel, Firewall and Events
// are required; Run closes Kernel and Firewall when it returns.
type Deps struct {
	Kernel   Kernel
	Firewall Firewall
	Events   EventSource
	// FirewallMonitor (nftables) tells of damage as it happens; without one,
	// FirewallPoll > 0 runs the backend's cheap Check that often (iptables
	// has no change events). Neither: damage is seen on the next pass.
	FirewallMonitor FirewallMonitor
	FirewallPoll    time.Duration
	Clock           Clock     // nil: the real clock
	Probe           ProbeFunc // nil: probe.Run
	Burst           BurstFunc // nil: probe.Burst (traffic_trigger)
	// Notify sends one sd_notify state ("READY=1", "WATCHDOG=1",
	// "STATUS=..."); nil: none. It must not block (a datagram).
	Notify func(state string)
	// Watchdog > 0: the loop sends WATCHDOG=1 every Watchdog/2.
	Watchdog time.Duration
	// Services starts the [[service]] backend checks (services.go); nil:
	// none, every backend stays in the set.
	Services ServiceChecksFunc
}

// Open is the production constructor: it loads the config and opens the
// real netlink kernel, firewall backend, rtnetlink watcher, nftables
// monitor and systemd notifications, all in opts.NetNS. A bad config
// returns policy.Problems and touches nothing.
func Open(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	// The control socket first: a second daemon on the same socket stops
	// here, before it touches the kernel (control.go).
	sock, err := listenControl(cfg, opts)
	if err != nil {
		return nil, err
	}
	// The kernel mirror is both the routing applier and the event source:
	// each notification updates it before its event reaches the loop.
	k, err := kernel.Open(opts.NetNS, opts.Logger)
	if err != nil {
		closeSocket(sock)
		return nil, err
	}
	setTables(k, cfg)
	fd := netnsx.FD(opts.NetNS)
	fw, err := firewall.FromConfig(cfg.Firewall, fd, opts.Logger)
	if err != nil {
		k.Close()
		closeSocket(sock)
		return nil, fmt.Errorf("firewall %s: %w", cfg.Firewall.Backend, err)
	}
	deps := Deps{
		Kernel:   k,
		Firewall: fw,
		Events:   k,
		Notify:   func(state string) { _, _ = sddaemon.SdNotify(false, state) },
	}
	if cfg.Firewall.Backend == "iptables" {
		deps.FirewallPoll = time.Second
	} else {
		deps.FirewallMonitor = nftMonitor{fd}
	}
	deps.Services = realServiceChecks(fd, opts.Logger)
	if every, err := sddaemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		deps.Watchdog = every
	}
	d, err := New(cfg, opts, deps)
	if err != nil {
		fw.Close()
		k.Close()
		closeSocket(sock)
		return nil, err
	}
	d.x.sock = sock // served by Run (control.go)
	return d, nil
}

type nftMonitor struct{ fd int }

func (m nftMonitor) Watch(ctx context.Context, damaged chan<- struct{}) error {
	return firewall.WatchNFTables(ctx, m.fd, damaged)
}

// loopTimer is a resettable timer with a channel, built on Clock.AfterFunc
// so the fake clock drives the loop the same way the real one does. A stale
// callback (of a timer stopped or reset meanwhile) is recognised by its
// generation and sends nothing.
type loopTimer struct {
	clock Clock
	C     chan time.Time

	mu  sync.Mutex
	t   hooks.Timer
	gen uint64
	at  time.Time
}

func newLoopTimer(c Clock) *loopTimer { return &loopTimer{clock: c, C: make(chan time.Time, 1)} }

// resetAt arms the timer for at (now or earlier: fires at once), replacing
// any earlier arming and discarding a fired, unread tick.
func (t *loopTimer) resetAt(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopLocked()
	t.at = at
	gen := t.gen
	t.t = t.clock.AfterFunc(max(0, at.Sub(t.clock.Now())), func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if gen != t.gen {
			return
		}
		t.t = nil
		select {
		case t.C <- t.clock.Now():
		default:
		}
	})
}

// due is the time the timer is armed for or has fired for with its tick
// still unread, zero otherwise. Re-arming for that same time would discard
// the tick (resetAt), and on a clock whose timers for "now" fire only when
// it next moves (the fake one) the deadline would then never come.
func (t *loopTimer) due() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.t == nil && len(t.C) == 0 {
		return time.Time{}
	}
	return t.at
}

// armedAt is the time the timer is armed for, zero when it is not.
func (t *loopTimer) armedAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.t == nil {
		return time.Time{}
	}
	return t.at
}

func (t *loopTimer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopLocked()
}

func (t *loopTimer) stopLocked() {
	if t.t != nil {
		t.t.Stop()
		t.t = nil
	}
	t.gen++
	select {
	case <-t.C:
	default:
	}
}
