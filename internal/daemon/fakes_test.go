package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/hooks"
	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// Fakes for the loop tests: a kernel that holds an Observed and applies
// changes to it, a firewall that records syncs, an event source the test
// feeds, and hooks.FakeClock. They run as any user, touching nothing.

// fakeKernel is a routing state in memory. Apply makes it match, so a
// converged loop finds nothing to do, as with the real kernel.
type fakeKernel struct {
	mu       sync.Mutex
	obs      policy.Observed
	failures []error       // returned by the next Applies, in order
	snapErrs []error       // returned by the next Snapshots, in order
	gate     chan struct{} // non-nil: Snapshot waits for it to be closed
	entered  chan struct{} // signalled when a Snapshot starts waiting on gate
	snaps    int
	trace    *traceFile // "apply" lines, to order applies against hooks
	closed   bool
	// history is the link history, written as the kernel mirror writes
	// it: one record per transition an edit makes, and the flaps of a
	// link between two edits (flap).
	history *linklog.History
	// tables and ipv6 are what the loop told the mirror to keep
	// (SetTables, SetIPv6).
	tables []int
	ipv6   bool
}

func newFakeKernel(obs policy.Observed) *fakeKernel {
	return &fakeKernel{obs: obs, entered: make(chan struct{}, 16), history: linklog.New(0)}
}

func (k *fakeKernel) LinkHistory(after, upTo uint64) ([]linklog.Record, bool) {
	return k.history.Between(after, upTo)
}

// recordLinks writes what an edit did to the links and addresses into the
// history, the way the kernel mirror turns notifications into records.
func (k *fakeKernel) recordLinks(before, after policy.Observed) {
	names := slices.Sorted(maps.Keys(before.Links))
	for n := range after.Links {
		if _, ok := before.Links[n]; !ok {
			names = append(names, n)
		}
	}
	for _, name := range names {
		old, hadOld := before.Links[name]
		now, hasNow := after.Links[name]
		if hadOld && (!hasNow || now.Index != old.Index) {
			rec := linklog.Record{Kind: linklog.Gone, Name: name, Index: old.Index}
			if linkUpNow(old) {
				rec.Downs = 1
			}
			k.history.Append(rec)
			hadOld = false
		}
		if !hasNow {
			continue
		}
		rec := linklog.Record{Name: name, Index: now.Index}
		switch {
		case !hadOld:
			rec.Kind = linklog.Appeared
			k.history.Append(rec)
			if linkUpNow(now) {
				rec.Kind = linklog.Up
				k.history.Append(rec)
			}
		case linkUpNow(old) && !linkUpNow(now):
			rec.Kind, rec.Downs = linklog.Down, 1
			k.history.Append(rec)
		case !linkUpNow(old) && linkUpNow(now):
			rec.Kind = linklog.Up
			k.history.Append(rec)
		}
		if !slices.Equal(before.Addrs[name], after.Addrs[name]) {
			k.history.Append(linklog.Record{Kind: linklog.AddrRemoved, Name: name, Index: now.Index})
			k.history.Append(linklog.Record{Kind: linklog.AddrAdded, Name: name, Index: now.Index})
		}
	}
}

// flap records n down/up cycles of dev (up/down cycles of a link that is
// down) that no snapshot shows: what a quick `ip link set dev down; up`
// leaves in the history.
func (k *fakeKernel) flap(dev string, n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ln := k.obs.Links[dev]
	for range n {
		down := linklog.Record{Kind: linklog.Down, Name: dev, Index: ln.Index, Downs: 1}
		up := linklog.Record{Kind: linklog.Up, Name: dev, Index: ln.Index}
		if !linkUpNow(ln) {
			down, up = up, down
		}
		k.history.Append(down)
		k.history.Append(up)
	}
}

func (k *fakeKernel) Snapshot() (policy.Observed, error) {
	k.mu.Lock()
	gate := k.gate
	k.mu.Unlock()
	if gate != nil {
		k.entered <- struct{}{}
		<-gate
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.snaps++
	if len(k.snapErrs) > 0 {
		err := k.snapErrs[0]
		k.snapErrs = k.snapErrs[1:]
		return policy.Observed{}, err
	}
	obs := cloneObserved(k.obs)
	obs.LinkSeq = k.history.Last()
	return obs, nil
}

func (k *fakeKernel) ReadSysctls(keys []string) (map[string]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]string{}
	for _, key := range keys {
		if v, ok := k.obs.Sysctls[key]; ok {
			out[key] = v
		}
	}
	return out, nil
}

func (k *fakeKernel) Apply(changes []policy.Change, _ policy.Observed) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.failures) > 0 {
		err := k.failures[0]
		k.failures = k.failures[1:]
		return err
	}
	if k.trace != nil {
		k.trace.add("apply")
	}
	o := &k.obs
	for _, c := range changes {
		switch c.Op {
		case policy.OpSetSysctl:
			o.Sysctls[c.Sysctl.Key] = c.Sysctl.Value
		case policy.OpAddRoute:
			o.Routes = append(o.Routes, c.Route)
		case policy.OpReplaceRoute:
			o.Routes = slices.DeleteFunc(o.Routes, func(r policy.Route) bool { return r.Key() == c.Route.Key() && r.Protocol == policy.Protocol })
			o.Routes = append(o.Routes, c.Route)
		case policy.OpAddRule:
			o.Rules = append(o.Rules, c.Rule)
		case policy.OpDelRule:
			if i := slices.IndexFunc(o.Rules, func(r policy.Rule) bool { return r.Key() == c.Rule.Key() }); i >= 0 {
				o.Rules = slices.Delete(o.Rules, i, i+1)
			}
		case policy.OpDelRoute, policy.OpDelForeignRoute:
			o.Routes = slices.DeleteFunc(o.Routes, func(r policy.Route) bool { return r.Equal(c.Route) })
		}
	}
	return nil
}

func (k *fakeKernel) ForgetNeighbor(string, netip.Addr, policy.Observed) error { return nil }

func (k *fakeKernel) SetTables(tables []int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tables = slices.Clone(tables)
}

func (k *fakeKernel) SetIPv6(on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ipv6 = on
}

func (k *fakeKernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	return nil
}

// edit changes the kernel state as another actor (or the kernel) would.
func (k *fakeKernel) edit(f func(o *policy.Observed)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	before := cloneObserved(k.obs)
	f(&k.obs)
	k.recordLinks(before, k.obs)
}

func (k *fakeKernel) failNext(errs ...error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failures = append(k.failures, errs...)
}

func (k *fakeKernel) snapshots() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.snaps
}

func (k *fakeKernel) hasRoute(table int, dev string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.ContainsFunc(k.obs.Routes, func(r policy.Route) bool {
		return r.Table == table && r.Protocol == policy.Protocol && r.Dst.Bits() == 0 &&
			slices.ContainsFunc(r.Nexthops, func(nh policy.Nexthop) bool { return nh.Dev == dev })
	})
}

func (k *fakeKernel) hasRule(priority int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.ContainsFunc(k.obs.Rules, func(r policy.Rule) bool { return r.Priority == priority && r.Protocol == policy.Protocol })
}

func cloneObserved(o policy.Observed) policy.Observed {
	c := policy.Observed{Links: map[string]policy.Link{}, Addrs: map[string][]policy.Addr{}, Sysctls: map[string]string{}}
	for k, v := range o.Links {
		c.Links[k] = v
	}
	for k, v := range o.Addrs {
		c.Addrs[k] = slices.Clone(v)
	}
	for _, r := range o.Routes {
		r.Nexthops = slices.Clone(r.Nexthops)
		c.Routes = append(c.Routes, r)
	}
	c.Rules = slices.Clone(o.Rules)
	return c
}

// kernelDrop does what the kernel does when a link goes down: every route
// through it alone goes (multipath routes lose nothing here: the kernel
// marks such a nexthop dead and revives it on up).
func kernelDrop(o *policy.Observed, dev string) {
	o.Routes = slices.DeleteFunc(o.Routes, func(r policy.Route) bool {
		return len(r.Nexthops) == 1 && r.Nexthops[0].Dev == dev
	})
}

// twoPPP is the kernel of a gateway with lan0 and two ppp links up.
func twoPPP() policy.Observed {
	o := policy.Observed{
		Links: map[string]policy.Link{
			"lo":   {Index: 1, Name: "lo", Up: true, Carrier: true},
			"lan0": {Index: 2, Name: "lan0", Up: true, Carrier: true},
			"ppp0": {Index: 3, Name: "ppp0", Up: true, Carrier: true, PointToPoint: true},
			"ppp1": {Index: 4, Name: "ppp1", Up: true, Carrier: true, PointToPoint: true},
		},
		Addrs: map[string][]policy.Addr{
			"lan0": {{Prefix: netip.MustParsePrefix("10.0.0.1/24")}},
			"ppp0": {{Prefix: netip.MustParsePrefix("100.64.0.2/32"), Peer: netip.MustParseAddr("100.64.0.1")}},
			"ppp1": {{Prefix: netip.MustParsePrefix("100.64.1.2/32"), Peer: netip.MustParseAddr("100.64.1.1")}},
		},
		Sysctls: map[string]string{},
	}
	for dev, peer := range map[string]string{"ppp0": "100.64.0.1/32", "ppp1": "100.64.1.1/32"} {
		o.Routes = append(o.Routes, policy.Route{Table: policy.MainTable, Dst: netip.MustParsePrefix(peer), Protocol: 2,
			ScopeLink: true, Nexthops: []policy.Nexthop{{Dev: dev}}})
	}
	o.Routes = append(o.Routes, policy.Route{Table: policy.MainTable, Dst: netip.MustParsePrefix("10.0.0.0/24"), Protocol: 2,
		ScopeLink: true, Nexthops: []policy.Nexthop{{Dev: "lan0"}}})
	for _, p := range []int{0, 32766, 32767} {
		o.Rules = append(o.Rules, policy.Rule{Priority: p, Table: map[int]int{0: 255, 32766: 254, 32767: 253}[p]})
	}
	return o
}

// fakeFirewall records syncs; Check reports intact unless damaged is set.
type fakeFirewall struct {
	mu      sync.Mutex
	syncs   int
	last    *firewall.Ruleset
	damaged bool
	closed  bool
	// traffic is what ReadTraffic returns, per interface; reads counts
	// the calls.
	traffic map[string]firewall.Traffic
	reads   int
	// cleared counts the conntrack deletes by mark, IPv4 and IPv6.
	cleared, cleared6 map[uint32]int
}

func (f *fakeFirewall) ReadTraffic(ifaces ...string) (map[string]firewall.Traffic, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	out := map[string]firewall.Traffic{}
	for k, v := range f.traffic {
		if len(ifaces) == 0 || slices.Contains(ifaces, k) {
			out[k] = v
		}
	}
	return out, nil
}

func (f *fakeFirewall) Sync(rs firewall.Ruleset) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	changed := f.last == nil || !reflect.DeepEqual(*f.last, rs) || f.damaged
	f.last, f.damaged = &rs, false
	return changed, nil
}

func (f *fakeFirewall) Check() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.damaged, nil
}

func (f *fakeFirewall) DeleteConntrackByMark(uint32, uint32) (int, error) { return 0, nil }

// InSync is the nftables backend's answer: rs is what the last Sync
// applied and no damage was seen since.
func (f *fakeFirewall) InSync(rs firewall.Ruleset) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last != nil && !f.damaged && reflect.DeepEqual(*f.last, rs)
}

func (f *fakeFirewall) ClearConntrackByMark(mark, _ uint32) error {
	return f.clear(&f.cleared, mark)
}

func (f *fakeFirewall) ClearConntrack6ByMark(mark, _ uint32) error {
	return f.clear(&f.cleared6, mark)
}

func (f *fakeFirewall) clear(counts *map[uint32]int, mark uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *counts == nil {
		*counts = map[uint32]int{}
	}
	(*counts)[mark]++
	return nil
}

// Flush forgets the applied ruleset, as the real backends remove it.
func (f *fakeFirewall) Flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = nil
	return nil
}

func (f *fakeFirewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// fakeEvents hands the loop's event channel to the test.
type fakeEvents struct{ out chan chan<- watcher.Event }

func (f fakeEvents) Run(ctx context.Context, out chan<- watcher.Event) error {
	select {
	case f.out <- out:
	case <-ctx.Done():
		return nil
	}
	<-ctx.Done()
	return nil
}

// traceFile is a file that the fake kernel and hook scripts append lines to.
type traceFile struct {
	mu   sync.Mutex
	path string
}

func (f *traceFile) add(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fh, err := os.OpenFile(f.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		panic(err)
	}
	defer fh.Close()
	fmt.Fprintln(fh, line)
}

func (f *traceFile) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := os.ReadFile(f.path)
	return strings.Fields(string(b))
}

// logBuf collects the daemon's JSON log records.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns the records whose fields include all of want.
func (l *logBuf) records(want map[string]any) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
next:
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		for k, v := range want {
			if m[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// loop is a daemon running on fakes.
type loop struct {
	t       testing.TB
	k       *fakeKernel
	fw      *fakeFirewall
	clk     *hooks.FakeClock
	cfgPath string
	// stateDir replaces [daemon] state_dir (Options.StateDir).
	stateDir string
	d        *Daemon
	out      chan<- watcher.Event
	syncs    chan SyncResult
	logs     *logBuf
	cancel   context.CancelFunc
	done     chan error

	mu      sync.Mutex
	notices []string
}

type loopOpts struct {
	config   string
	obs      policy.Observed
	watchdog time.Duration
	fwPoll   time.Duration
	services ServiceChecksFunc
	probe    ProbeFunc // nil: the real prober
	watch    bool      // Options.WatchConfig
	stateDir string    // Options.StateDir; "": a temporary one
}

func startLoop(t testing.TB, o loopOpts) *loop {
	t.Helper()
	return startLoopWith(t, o, nil)
}

// startLoopWith is startLoop with a last say over the Deps.
func startLoopWith(t testing.TB, o loopOpts, deps func(*Deps)) *loop {
	t.Helper()
	l := &loop{t: t, k: newFakeKernel(o.obs), fw: &fakeFirewall{}, clk: hooks.NewFakeClock(time.Time{}),
		syncs: make(chan SyncResult, 1024), logs: &logBuf{}, done: make(chan error, 1)}
	l.cfgPath = filepath.Join(t.TempDir(), "uplinkd.toml")
	l.writeConfig(o.config)
	cfg, err := LoadConfig(l.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	events := fakeEvents{out: make(chan chan<- watcher.Event, 1)}
	logger := slog.New(slog.NewJSONHandler(l.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Off the host's /var/lib/uplinkd: every loop gets its own state
	// directory, unless the test names one (restart tests).
	l.stateDir = o.stateDir
	if l.stateDir == "" && cfg.Daemon.StateDir == policy.DefaultStateDir {
		l.stateDir = t.TempDir()
	}
	dp := Deps{Kernel: l.k, Firewall: l.fw, Events: events, Clock: l.clk, Watchdog: o.watchdog, Notify: l.notify, FirewallPoll: o.fwPoll,
		Services: o.services, Probe: o.probe}
	if deps != nil {
		deps(&dp)
	}
	l.d, err = New(cfg, Options{ConfigPath: l.cfgPath, Logger: logger, WatchConfig: o.watch, StateDir: l.stateDir, OnSync: func(s SyncResult) { l.syncs <- s }}, dp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { l.done <- l.d.Run(ctx) }()
	t.Cleanup(l.stop)
	select {
	case l.out = <-events.out:
	case <-time.After(waitLong):
		t.Fatal("the loop never started its event source")
	}
	l.send(watcher.Event{Kind: watcher.KindResync})
	if s := l.pass(); s.Err != nil {
		t.Fatalf("first pass: %v", s.Err)
	}
	return l
}

func (l *loop) notify(state string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.notices = append(l.notices, state)
}

func (l *loop) countNotices(state string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.notices {
		if s == state {
			n++
		}
	}
	return n
}

func (l *loop) writeConfig(text string) {
	l.t.Helper()
	if err := os.WriteFile(l.cfgPath, []byte(text), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

func (l *loop) send(ev watcher.Event) {
	l.t.Helper()
	if ev.At.IsZero() {
		ev.At = l.clk.Now()
	}
	select {
	case l.out <- ev:
	case <-time.After(waitLong):
		l.t.Fatal("the loop does not take events")
	}
}

// pass waits (in real time, generously) for the next reconcile pass.
func (l *loop) pass() SyncResult {
	l.t.Helper()
	select {
	case s := <-l.syncs:
		return s
	case <-time.After(10 * time.Second):
		l.t.Fatal("no reconcile pass")
	}
	return SyncResult{}
}

// quiet asserts that no pass result is waiting to be read.
func (l *loop) quiet() {
	l.t.Helper()
	select {
	case s := <-l.syncs:
		l.t.Fatalf("unexpected pass: %+v", s.Changes)
	default:
	}
}

func (l *loop) stop() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.cancel = nil
	select {
	case err := <-l.done:
		if err != nil {
			l.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		l.t.Error("Run did not return")
	}
	if !l.k.closed || !l.fw.closed {
		l.t.Error("Run did not close the kernel and firewall handles")
	}
}

// verifyNoLeaks checks, at the end of a test, that nothing the loop started
// outlives it (goroutines of the test binary itself are ignored).
func verifyNoLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	// The hooks package forks every child from one goroutine that locks
	// its thread for good (Pdeathsig is per thread): it lives on by design.
	starter := goleak.IgnoreTopFunction("github.com/uplinkd/uplinkd/hooks.processStarter")
	t.Cleanup(func() { goleak.VerifyNone(t, ignore, starter) })
}

// goroutinesIn counts goroutines whose stack mentions fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// script writes an executable /bin/sh script.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitUntil polls cond in real time (for work in other goroutines: hooks).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errBoom = errors.New("boom")
