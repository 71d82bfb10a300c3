package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/firewall"
	"github.com/uplinkd/uplinkd/internal/kernel"
	"github.com/uplinkd/uplinkd/internal/linklog"
	"github.com/uplinkd/uplinkd/policy"
	"github.com/uplinkd/uplinkd/watcher"
)

// The loop tests drive the real reconcile loop (Run, sync, the uplink
// runtimes, real hook and reconnect commands) on fake kernel, firewall,
// events and clock: they need no root and change nothing on the host.

// fakeConfig is labConfig with a hook on ppp0 appending the event name to
// trace (empty: no hook) and extra appended.
func fakeConfig(hook, extra string) string {
	var b strings.Builder
	b.WriteString(`
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]

[[uplink]]
name = "ppp0"
kind = "ppp"
table = 200
rule_priority = 200
`)
	if hook != "" {
		fmt.Fprintf(&b, `
  [[uplink.hook]]
  on = ["link-down", "link-up", "down", "up"]
  command = [%q]
`, hook)
	}
	b.WriteString(`
[[uplink]]
name = "ppp1"
kind = "ppp"
table = 201
rule_priority = 300

[[rule]]
name = "p2p"
uid = 108
uplink = "ppp1"
mark = 1
priority = 100
`)
	b.WriteString(extra)
	return b.String()
}

// hookScript returns a hook command that appends $UPLINKD_EVENT to trace.
func hookScript(t *testing.T, trace *traceFile) string {
	return script(t, t.TempDir(), "hook", `echo "$UPLINKD_EVENT" >> `+trace.path)
}

func newTrace(t *testing.T) *traceFile {
	return &traceFile{path: filepath.Join(t.TempDir(), "trace")}
}

func linkEvent(l *loop, dev string) watcher.Event {
	l.k.mu.Lock()
	defer l.k.mu.Unlock()
	return watcher.Event{Kind: watcher.KindLink, Index: l.k.obs.Links[dev].Index, Iface: dev}
}

func TestLoopConverges(t *testing.T) {
	verifyNoLeaks(t)
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
	for _, table := range []int{200, 201, policy.DefaultTable} {
		if !l.k.hasRoute(table, "ppp0") && !l.k.hasRoute(table, "ppp1") {
			t.Errorf("no owned default in table %d", table)
		}
	}
	if !l.k.hasRule(200) || !l.k.hasRule(300) || !l.k.hasRule(100) {
		t.Errorf("owned rules missing: %+v", l.k.obs.Rules)
	}
	// Converged: an unrelated event makes a pass with nothing to do.
	l.send(watcher.Event{Kind: watcher.KindRoute, Table: 99})
	if s := l.pass(); len(s.Changes) != 0 || s.Err != nil {
		t.Fatalf("second pass changed %v (err %v)", s.Changes, s.Err)
	}
	if n := l.countNotices("READY=1"); n != 1 {
		t.Errorf("READY=1 sent %d times", n)
	}
}

// TestLoopCoalesces: events that queue up while a pass runs make exactly
// one further pass, however many they are.
func TestLoopCoalesces(t *testing.T) {
	tests := []struct {
		name   string
		events int
	}{{"one", 1}, {"ten", 10}, {"two hundred", 200}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
			gate := make(chan struct{})
			l.k.mu.Lock()
			l.k.gate = gate
			l.k.mu.Unlock()
			l.send(linkEvent(l, "ppp0"))
			<-l.k.entered // the pass is in its snapshot
			l.k.mu.Lock()
			l.k.gate = nil
			l.k.mu.Unlock()
			for range tt.events {
				l.send(linkEvent(l, "ppp1"))
			}
			before := l.k.snapshots()
			close(gate)
			l.pass() // the pass that was blocked
			l.pass() // one for everything queued meanwhile
			// A marker: if the queue had made more than one pass, their
			// snapshots would come before the marker's.
			l.send(linkEvent(l, "ppp0"))
			l.pass()
			if got := l.k.snapshots() - before; got != 3 {
				t.Fatalf("%d events queued during a pass made %d passes, want 1 (+1 blocked, +1 marker)", tt.events, got-2)
			}
			l.quiet()
		})
	}
}

// deleteRule removes an owned rule as an admin would and tells the loop.
func deleteRule(l *loop, priority int) {
	l.k.edit(func(o *policy.Observed) {
		o.Rules = slices.DeleteFunc(o.Rules, func(r policy.Rule) bool { return r.Priority == priority })
	})
	l.send(watcher.Event{Kind: watcher.KindRule, Deleted: true, Protocol: policy.Protocol})
}

func restoresRule(s SyncResult, priority int) bool {
	return slices.ContainsFunc(s.Changes, func(c policy.Change) bool { return c.Op == policy.OpAddRule && c.Rule.Priority == priority })
}

// TestLoopRepairRateLimit: someone deletes an owned rule again and again.
// The first repairBurst deletions are undone at once; then the repair is
// held back (Deferred) until a token is back, a second later, while a
// failover in the same pass goes ahead.
func TestLoopRepairRateLimit(t *testing.T) {
	verifyNoLeaks(t)
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
	for i := range repairBurst {
		deleteRule(l, 200)
		if s := l.pass(); !restoresRule(s, 200) || s.Deferred {
			t.Fatalf("repair %d: changes %v deferred %v", i+1, s.Changes, s.Deferred)
		}
	}
	// Out of tokens; ppp1 loses its carrier at the same time.
	l.k.edit(func(o *policy.Observed) {
		ln := o.Links["ppp1"]
		ln.Carrier = false
		o.Links["ppp1"] = ln
	})
	deleteRule(l, 200)
	s := l.pass()
	if !s.Deferred || restoresRule(s, 200) {
		t.Fatalf("repair beyond the burst not held back: deferred %v changes %v", s.Deferred, s.Changes)
	}
	failover := slices.ContainsFunc(s.Changes, func(c policy.Change) bool {
		return c.Route.Table == policy.DefaultTable && len(c.Route.Nexthops) == 1 && c.Route.Nexthops[0].Dev == "ppp0"
	})
	if !failover {
		t.Fatalf("the failover waited for the repair: %v", s.Changes)
	}
	// The deferred repair comes when a token is back: a second (refill)
	// from now, and not before.
	if p := l.clk.Pending(); !slices.Contains(p, repairRefill) {
		t.Fatalf("pending timers %v, want one at %v", p, repairRefill)
	}
	l.clk.Advance(repairRefill - time.Millisecond)
	l.quiet()
	l.clk.Advance(time.Millisecond)
	if s := l.pass(); !restoresRule(s, 200) || s.Deferred {
		t.Fatalf("deferred repair: changes %v deferred %v", s.Changes, s.Deferred)
	}
	if !l.k.hasRule(200) {
		t.Fatal("rule not back")
	}
}

// TestLoopRetry: a failed apply is retried after retryAfter; a stale one
// at once; one that failed only because the link was not up yet waits for
// that link's next event, with no timer.
func TestLoopRetry(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		snapshot  bool          // the snapshot fails, not the apply
		wantTimer time.Duration // -1: none
	}{
		{"error: retry after a second", errBoom, false, retryAfter},
		{"snapshot error: retry after a second", errBoom, true, retryAfter},
		{"kernel changed during the apply: resync at once", fmt.Errorf("ip route add ...: %w", kernel.ErrStale), false, 0},
		{"stale snapshot: resync at once", fmt.Errorf("mirror: %w", kernel.ErrStale), true, 0},
		{"network is down: wait for link-up", fmt.Errorf("ip route add default dev ppp0 table 200: %w", syscall.ENETDOWN), false, -1},
		{"network is down and another error: retry", errors.Join(syscall.ENETDOWN, errBoom), false, retryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
			if tt.snapshot {
				l.k.mu.Lock()
				l.k.snapErrs = append(l.k.snapErrs, tt.err)
				l.k.mu.Unlock()
			} else {
				l.k.failNext(tt.err)
			}
			deleteRule(l, 300)
			s := l.pass()
			if s.Err == nil {
				t.Fatal("the pass did not fail")
			}
			pending := l.clk.Pending()
			if tt.wantTimer < 0 {
				if len(pending) != 0 {
					t.Fatalf("timers %v after a link-not-up failure, want none", pending)
				}
				if recs := l.logs.records(map[string]any{"level": "ERROR"}); len(recs) != 0 {
					t.Fatalf("logged as an error: %v", recs)
				}
				if recs := l.logs.records(map[string]any{"msg": "link not up yet; applying again on its link-up event"}); len(recs) != 1 {
					t.Fatalf("no link-not-up record")
				}
				l.send(linkEvent(l, "ppp0"))
			} else {
				if !slices.Equal(pending, []time.Duration{tt.wantTimer}) {
					t.Fatalf("timers %v, want [%v]", pending, tt.wantTimer)
				}
				l.clk.Advance(tt.wantTimer - 1)
				if tt.wantTimer > 0 {
					l.quiet()
				}
				l.clk.Advance(1)
			}
			if s := l.pass(); s.Err != nil || !restoresRule(s, 300) {
				t.Fatalf("retry: err %v changes %v", s.Err, s.Changes)
			}
		})
	}
}

// TestLoopReloadKeepsOldConfigOnBadFile: a broken or empty file on reload is
// refused; the running config stays (its owned rule is still repaired). A
// good file then takes effect.
func TestLoopReloadKeepsOldConfigOnBadFile(t *testing.T) {
	tests := []struct{ name, text string }{
		{"syntax error", "[[uplink]\nname = "},
		{"bad value", fakeConfig("", "\n[[uplink]]\nname = \"ppp2\"\ntable = \"nope\"\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
			l.writeConfig(tt.text)
			if err := l.d.Reload(context.Background()); err == nil {
				t.Fatal("bad config accepted")
			}
			if recs := l.logs.records(map[string]any{"event": "config-reload", "level": "ERROR"}); len(recs) != 1 || recs[0]["reason"] == nil {
				t.Fatalf("reload failure records: %v", recs)
			}
			deleteRule(l, 100)
			if s := l.pass(); !restoresRule(s, 100) {
				t.Fatalf("the old config's rule was not restored: %v", s.Changes)
			}
			// A good file without the [[rule]]: its rule goes.
			cfg := fakeConfig("", "")
			l.writeConfig(cfg[:strings.Index(cfg, "[[rule]]")])
			if err := l.d.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			l.pass()
			if l.k.hasRule(100) {
				t.Fatal("the rule of the old config stayed after a good reload")
			}
		})
	}
}

// setLink changes ppp0's link flags as the kernel would.
func setLink(l *loop, dev string, f func(*policy.Link)) {
	l.k.edit(func(o *policy.Observed) {
		ln := o.Links[dev]
		f(&ln)
		o.Links[dev] = ln
	})
}

// TestLoopHooksAfterApplyInOrder: hooks run after the pass applied its
// changes, one at a time per uplink, in the order the events happened.
func TestLoopHooksAfterApplyInOrder(t *testing.T) {
	verifyNoLeaks(t)
	trace := newTrace(t)
	l := startLoop(t, loopOpts{config: fakeConfig(hookScript(t, trace), ""), obs: twoPPP()})
	l.k.mu.Lock()
	l.k.trace = trace
	l.k.mu.Unlock()

	setLink(l, "ppp0", func(ln *policy.Link) { ln.Carrier = false })
	l.send(linkEvent(l, "ppp0"))
	l.pass()
	waitUntil(t, "down hooks", func() bool { return len(trace.lines()) >= 3 })
	setLink(l, "ppp0", func(ln *policy.Link) { ln.Carrier = true })
	l.send(linkEvent(l, "ppp0"))
	l.pass()
	want := []string{"apply", "link-down", "down", "apply", "link-up", "up"}
	waitUntil(t, "up hooks", func() bool { return len(trace.lines()) >= len(want) })
	if got := trace.lines(); !slices.Equal(got, want) {
		t.Fatalf("trace %q, want %q", got, want)
	}
}

// quickBounce makes the kernel do what a quick `ip link set DEV down; up` does,
// between two passes: the routes through DEV alone are gone, the link is
// up again. flapped: the link history has the down and up (the kernel
// notified them); without, only the routes are gone after a link record
// (the last address went and came back).
//
// The down and up events come in two passes (the second event is sent while
// the first pass runs): the second pass must not count the bounce again.
// quickBounce returns the first pass.
func quickBounce(l *loop, dev string, flapped bool) SyncResult {
	l.k.edit(func(o *policy.Observed) { kernelDrop(o, dev) })
	if flapped {
		l.k.flap(dev, 1)
	} else {
		l.k.history.Append(linklog.Record{Kind: linklog.AddrRemoved, Name: dev})
		l.k.history.Append(linklog.Record{Kind: linklog.AddrAdded, Name: dev})
	}
	gate := make(chan struct{})
	l.k.mu.Lock()
	l.k.gate = gate
	l.k.mu.Unlock()
	l.send(linkEvent(l, dev)) // down
	<-l.k.entered
	l.k.mu.Lock()
	l.k.gate = nil
	l.k.mu.Unlock()
	l.send(linkEvent(l, dev)) // up
	close(gate)
	s := l.pass()
	if s2 := l.pass(); len(s2.Changes) != 0 {
		l.t.Fatalf("the up event's pass changed %v", s2.Changes)
	}
	return s
}

// TestLoopBounceIsNotARepair: a link that went down and up between two
// passes gets its routes back at once, outside the repair budget, however
// often it happens, and its down and up are logged and hooked in order.
func TestLoopBounceIsNotARepair(t *testing.T) {
	tests := []struct {
		name    string
		flapped bool // the history has the down and up: each is logged and hooked
		times   int
	}{
		{"the history has each down and up", true, 8},
		{"routes vanished after an address record: restored, no bounce invented", false, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			trace := newTrace(t)
			l := startLoop(t, loopOpts{config: fakeConfig(hookScript(t, trace), ""), obs: twoPPP()})
			// ppp0 alone carries the default route, so a bounce drops that too.
			setLink(l, "ppp1", func(ln *policy.Link) { ln.Carrier = false })
			l.send(linkEvent(l, "ppp1"))
			l.pass()
			for i := range tt.times {
				s := quickBounce(l, "ppp0", tt.flapped)
				if s.Deferred || s.Err != nil {
					t.Fatalf("bounce %d: deferred %v err %v", i+1, s.Deferred, s.Err)
				}
				if !l.k.hasRoute(200, "ppp0") || !l.k.hasRoute(policy.DefaultTable, "ppp0") {
					t.Fatalf("bounce %d: routes not restored", i+1)
				}
			}
			if tok := l.d.sched.repairs.TokensAt(l.clk.Now()); tok < repairBurst {
				t.Fatalf("bounces used the repair budget: %v tokens left", tok)
			}
			if n := len(l.logs.records(map[string]any{"msg": "undoing a change someone else made to what uplinkd keeps"})); n != 0 {
				t.Fatalf("%d bounces logged as repairs", n)
			}
			bounces := 0
			if tt.flapped {
				bounces = tt.times
			}
			for _, ev := range []string{"link-down", "link-up"} {
				msg := "link " + strings.TrimPrefix(ev, "link-")
				if n := len(l.logs.records(map[string]any{"msg": msg, "event": ev, "uplink": "ppp0", "reason": "link bounced between passes"})); n != bounces {
					t.Errorf("%s logged %d times for %d bounces", ev, n, bounces)
				}
			}
			var want []string
			for range bounces {
				want = append(want, "link-down", "down", "link-up", "up")
			}
			waitUntil(t, "bounce hooks", func() bool { return len(trace.lines()) >= len(want) })
			if got := trace.lines(); !slices.Equal(got, want) {
				t.Fatalf("hooks %q, want %q", got, want)
			}
		})
	}
}

// TestLoopBounceSignals: which kernel observations count as a bounce, and
// that a deletion by someone else still counts as a repair.
func TestLoopBounceSignals(t *testing.T) {
	tests := []struct {
		name       string
		do         func(l *loop)
		wantBounce bool
		wantRepair bool
	}{
		{"the history has two bounces", func(l *loop) {
			l.k.edit(func(o *policy.Observed) { kernelDrop(o, "ppp0") })
			l.k.flap("ppp0", 2)
			l.send(linkEvent(l, "ppp0"))
		}, true, false},
		{"a resync: the gap's kernel counter moved", func(l *loop) {
			l.k.edit(func(o *policy.Observed) { kernelDrop(o, "ppp0") })
			l.k.history.Append(linklog.Record{Kind: linklog.Gap, Name: "ppp0", Index: 3, Downs: 2})
			l.send(watcher.Event{Kind: watcher.KindResync})
		}, true, false},
		{"a resync with nothing counted: routes restored, no bounce invented", func(l *loop) {
			l.k.edit(func(o *policy.Observed) { kernelDrop(o, "ppp0") })
			l.k.history.Append(linklog.Record{Kind: linklog.Gap, Name: "ppp0", Index: 3})
			l.send(watcher.Event{Kind: watcher.KindResync})
		}, false, false},
		{"re-created link (new ifindex)", func(l *loop) {
			l.k.edit(func(o *policy.Observed) {
				kernelDrop(o, "ppp0")
				ln := o.Links["ppp0"]
				ln.Index = 33
				o.Links["ppp0"] = ln
			})
			l.send(watcher.Event{Kind: watcher.KindLink, Index: 33, Iface: "ppp0"})
		}, true, false},
		{"someone deleted the table's route", func(l *loop) {
			l.k.edit(func(o *policy.Observed) {
				o.Routes = slices.DeleteFunc(o.Routes, func(r policy.Route) bool { return r.Table == 200 })
			})
			l.send(watcher.Event{Kind: watcher.KindRoute, Deleted: true, Table: 200, Protocol: policy.Protocol})
		}, false, true},
		{"routes gone, no link event", func(l *loop) {
			l.k.edit(func(o *policy.Observed) { kernelDrop(o, "ppp0") })
			l.send(watcher.Event{Kind: watcher.KindRoute, Deleted: true, Table: 200, Protocol: policy.Protocol})
		}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
			tt.do(l)
			if s := l.pass(); s.Err != nil || !l.k.hasRoute(200, "ppp0") {
				t.Fatalf("route not restored (err %v)", s.Err)
			}
			bounces := len(l.logs.records(map[string]any{"msg": "link down", "event": "link-down", "uplink": "ppp0"}))
			repairs := len(l.logs.records(map[string]any{"msg": "undoing a change someone else made to what uplinkd keeps"}))
			if (bounces > 0) != tt.wantBounce || (repairs > 0) != tt.wantRepair {
				t.Fatalf("link-down records %d, repairs %d; want bounce %v repair %v", bounces, repairs, tt.wantBounce, tt.wantRepair)
			}
		})
	}
}

// TestLoopNeverBlocks: a reconnect command wedged for a minute does not
// stall the loop: a reload that retires its reconnector returns at once,
// events still make passes and the watchdog is still pinged. Run then
// returns without waiting for the command, and every goroutine it started
// (reconnect attempt, hook worker of the removed uplink) has ended.
func TestLoopNeverBlocks(t *testing.T) {
	verifyNoLeaks(t)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	wedged := script(t, dir, "wedged", "touch "+started+"; exec sleep 60")
	trace := newTrace(t)
	hook := hookScript(t, trace)
	withReconnect := fakeConfig("", "") + `
[[uplink]]
name = "ppp2"
kind = "ppp"
table = 202
rule_priority = 400
  [uplink.reconnect]
  command = ["` + wedged + `"]
  [[uplink.hook]]
  on = ["link-down", "link-up"]
  command = ["` + hook + `"]
`
	const watchdog = 10 * time.Second
	obs := twoPPP()
	obs.Links["ppp2"] = policy.Link{Index: 5, Name: "ppp2", Up: true, Carrier: false, PointToPoint: true}
	l := startLoop(t, loopOpts{config: withReconnect, obs: obs, watchdog: watchdog})
	// ppp2 has no carrier: the first pass started the wedged reconnect.
	waitUntil(t, "the reconnect command to start", func() bool { _, err := os.Stat(started); return err == nil })
	// A hook of ppp2 runs, so it has a hook worker.
	setLink(l, "ppp2", func(ln *policy.Link) { ln.Carrier = true })
	l.send(linkEvent(l, "ppp2"))
	l.pass()
	waitUntil(t, "ppp2's link-up hook", func() bool { return slices.Contains(trace.lines(), "link-up") })

	// Reload without ppp2: its reconnector and hook worker are retired.
	l.writeConfig(fakeConfig("", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.d.Reload(ctx); err != nil {
		t.Fatalf("reload with a wedged reconnect command: %v", err)
	}
	l.pass()
	waitUntil(t, "the hook worker of the removed uplink to end", func() bool {
		return goroutinesIn("hooks.(*Runner).worker") == 0
	})

	// Passes and watchdog pings go on while the command still hangs.
	// Each interval's ping is awaited before the clock moves on: two
	// intervals advanced before the loop took the first tick would be one
	// ping, which says nothing about blocking.
	pings := l.countNotices("WATCHDOG=1")
	for i := range 5 {
		l.clk.Advance(watchdog / 2)
		waitUntil(t, "a watchdog ping per interval while a reconnect command hangs", func() bool {
			l.clk.Advance(0) // fires a ping re-armed for a time already past
			return l.countNotices("WATCHDOG=1")-pings >= i+1
		})
		deleteRule(l, 100)
		if s := l.pass(); !restoresRule(s, 100) {
			t.Fatalf("pass %d while the reconnect command hangs: %v", i, s.Changes)
		}
	}
	if goroutinesIn("hooks.(*Reconnector).attempt") != 1 {
		t.Fatal("the wedged attempt is not running any more: the test proves nothing")
	}
	l.stop()
}

// TestLoopFirewallPoll: without a monitor (iptables), the backend's Check
// runs every FirewallPoll; damage makes a pass that rewrites the firewall,
// and the check keeps running afterwards.
func TestLoopFirewallPoll(t *testing.T) {
	verifyNoLeaks(t)
	const poll = time.Second
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP(), fwPoll: poll})
	for i := range 3 {
		l.fw.mu.Lock()
		l.fw.damaged = true
		l.fw.mu.Unlock()
		l.clk.Advance(poll)
		if s := l.pass(); !s.FirewallChanged {
			t.Fatalf("round %d: the pass after damage did not rewrite the firewall", i)
		}
		waitUntil(t, "the next check to be armed", func() bool { return slices.Contains(l.clk.Pending(), poll) })
	}
	// Intact: a check makes no pass.
	l.clk.Advance(poll)
	l.send(linkEvent(l, "ppp0"))
	if s := l.pass(); s.FirewallChanged {
		t.Fatal("an intact firewall was rewritten")
	}
}

// TestLoopReloadReadsOutsideTheLoop: a config file whose read hangs (here a
// FIFO nobody writes yet; in life a stalled disk or NSS for user names)
// holds up Reload's caller, never the loop.
func TestLoopReloadReadsOutsideTheLoop(t *testing.T) {
	verifyNoLeaks(t)
	l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
	if err := os.Remove(l.cfgPath); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(l.cfgPath, 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan error, 1)
	go func() { reloaded <- l.d.Reload(context.Background()) }()
	for range 3 {
		deleteRule(l, 100)
		if s := l.pass(); !restoresRule(s, 100) {
			t.Fatalf("no pass while a reload reads its file: %v", s.Changes)
		}
	}
	select {
	case err := <-reloaded:
		t.Fatalf("Reload returned before its file could be read: %v", err)
	default:
	}
	// Now the file arrives: without the [[rule]], whose rule then goes.
	// The reader blocked on the FIFO gets the text once, then EOF; every
	// later open (a loader may read the file more than once) finds a
	// regular file with the same text. Offering the text on the FIFO
	// repeatedly instead can hand one reader two copies ("table [lan] is
	// already defined") when a second writer opens before it saw EOF.
	cfg := fakeConfig("", "")
	text := []byte(cfg[:strings.Index(cfg, "[[rule]]")])
	// O_RDWR opens a FIFO without waiting for a reader (Linux), and as a
	// writer it releases a reader waiting in open.
	fifo, err := os.OpenFile(l.cfgPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	regular := l.cfgPath + ".new"
	if err := os.WriteFile(regular, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(regular, l.cfgPath); err != nil {
		t.Fatal(err)
	}
	if _, err := fifo.Write(text); err != nil {
		t.Fatal(err)
	}
	fifo.Close()
	err = <-reloaded
	if err != nil {
		t.Fatal(err)
	}
	l.pass()
	if l.k.hasRule(100) {
		t.Fatal("the reloaded config did not take effect")
	}
}

// TestLoopHistoryBounceOrder: the link history also tells of down/up cycles
// around a down or up the passes did see; the log tells them all, in the
// order they happened.
func TestLoopHistoryBounceOrder(t *testing.T) {
	type step struct {
		flaps int  // cycles no snapshot shows, before the state the pass sees
		up    bool // the carrier the pass sees
	}
	tests := []struct {
		name  string
		steps []step // one pass each
		want  []string
	}{
		{"up: down, up between passes", []step{{1, true}},
			[]string{"link-down", "link-up"}},
		{"up: down, up, down: the last down seen", []step{{1, false}},
			[]string{"link-down", "link-up", "link-down"}},
		{"down seen, then up, down, up", []step{{0, false}, {1, true}},
			[]string{"link-down", "link-up", "link-down", "link-up"}},
		{"down seen, then up, down: still down", []step{{0, false}, {1, false}},
			[]string{"link-down", "link-up", "link-down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: twoPPP()})
			for _, step := range tt.steps {
				l.k.flap("ppp0", step.flaps)
				setLink(l, "ppp0", func(ln *policy.Link) { ln.Carrier = step.up })
				l.send(linkEvent(l, "ppp0"))
				l.pass()
			}
			var got []string
			for _, r := range l.logs.records(map[string]any{"uplink": "ppp0"}) {
				if m := r["msg"]; m == "link down" || m == "link up" {
					got = append(got, r["event"].(string))
				}
			}
			got = got[1:] // the first pass's link-up
			if !slices.Equal(got, tt.want) {
				t.Fatalf("link records %q, want %q", got, tt.want)
			}
		})
	}
}

// TestLoopConntrackFlush: which transitions delete an uplink's conntrack
// entries. An address gained where there was none deletes nothing: on a
// second gateway taking over a keepalived address, those entries are the
// ones conntrackd has just committed, NATed to that very address.
func TestLoopConntrackFlush(t *testing.T) {
	setAddr := func(a string) func(o *policy.Observed) {
		return func(o *policy.Observed) {
			if a == "" {
				delete(o.Addrs, "ppp0")
				return
			}
			o.Addrs["ppp0"] = []policy.Addr{{Prefix: netip.MustParsePrefix(a + "/32"), Peer: netip.MustParseAddr("100.64.0.1")}}
		}
	}
	carrierLost := func(o *policy.Observed) {
		ln := o.Links["ppp0"]
		ln.Carrier = false
		o.Links["ppp0"] = ln
	}
	const first = "100.64.0.2" // twoPPP's address of ppp0
	tests := []struct {
		name      string
		ha        bool                       // [ha] configured (two gateways)
		steps     []func(o *policy.Observed) // one pass each, after the first
		wantFlush int                        // of ppp0, over the steps
	}{
		{"address replaced", false, []func(*policy.Observed){setAddr("100.64.0.77")}, 1},
		{"address lost", false, []func(*policy.Observed){setAddr("")}, 1},
		{"address lost, then a new one", false, []func(*policy.Observed){setAddr(""), setAddr("100.64.0.77")}, 1},
		{"carrier lost (failed)", false, []func(*policy.Observed){carrierLost}, 1},
		// Two gateways: a lost address may be a keepalived address moving
		// to the other box, whose conntrackd carries the connections.
		{"ha: address lost", true, []func(*policy.Observed){setAddr("")}, 0},
		{"ha: address lost, back the same", true, []func(*policy.Observed){setAddr(""), setAddr(first)}, 0},
		{"ha: address lost, then a new one", true, []func(*policy.Observed){setAddr(""), setAddr("100.64.0.77")}, 1},
		{"ha: address replaced", true, []func(*policy.Observed){setAddr("100.64.0.77")}, 1},
		{"ha: carrier lost with the address kept", true, []func(*policy.Observed){carrierLost}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			extra := ""
			if tt.ha {
				extra = fmt.Sprintf("\n[ha]\ntrack_file = %q\n", filepath.Join(t.TempDir(), "track"))
			}
			obs := twoPPP()
			if a := obs.Addrs["ppp0"]; len(a) != 1 || a[0].Prefix.Addr().String() != first {
				t.Fatalf("twoPPP's ppp0 addresses %v, want %s", a, first)
			}
			l := startLoop(t, loopOpts{config: fakeConfig("", extra), obs: obs})
			reported := 0 // what the passes say they sent
			for _, step := range tt.steps {
				l.k.edit(step)
				l.send(linkEvent(l, "ppp0"))
				reported += l.pass().ConntrackDeletes
			}
			got := len(l.logs.records(map[string]any{"msg": "conntrack entries of the uplink deleted", "uplink": "ppp0"}))
			if got != tt.wantFlush {
				t.Errorf("ppp0's conntrack entries deleted %d times, want %d", got, tt.wantFlush)
			}
			if reported != tt.wantFlush {
				t.Errorf("the passes reported %d conntrack deletes, want %d", reported, tt.wantFlush)
			}
			l.fw.mu.Lock()
			cleared := l.fw.cleared[firewall.UplinkMark(0)]
			l.fw.mu.Unlock()
			if cleared != tt.wantFlush {
				t.Errorf("the firewall cleared ppp0's mark %d times, want %d", cleared, tt.wantFlush)
			}
		})
	}
	t.Run("first address after a start without one", func(t *testing.T) {
		verifyNoLeaks(t)
		obs := twoPPP()
		delete(obs.Addrs, "ppp0")
		l := startLoop(t, loopOpts{config: fakeConfig("", ""), obs: obs})
		l.k.edit(setAddr("100.64.0.77"))
		l.send(linkEvent(l, "ppp0"))
		if s := l.pass(); !slices.ContainsFunc(s.Desired.Uplinks, func(u policy.UplinkState) bool { return u.Name == "ppp0" && u.Addr.IsValid() }) {
			t.Fatalf("ppp0 has no address in the pass: %+v", s.Desired.Uplinks)
		}
		if n := len(l.logs.records(map[string]any{"msg": "conntrack entries of the uplink deleted", "uplink": "ppp0"})); n != 0 {
			t.Errorf("ppp0's conntrack entries deleted %d times when it gained its address", n)
		}
	})
}

// TestOwnEcho: which notifications need no pass. An add of uplinkd's
// protocol is its own write coming back; a delete is only when the mirror
// recognised it as the echo of a delete it made. Anything else, a delete of
// our objects by someone else above all, brings a pass.
func TestOwnEcho(t *testing.T) {
	tests := []struct {
		name string
		ev   watcher.Event
		want bool
	}{
		{"our route added", watcher.Event{Kind: watcher.KindRoute, Protocol: policy.Protocol}, true},
		{"our rule added", watcher.Event{Kind: watcher.KindRule, Protocol: policy.Protocol}, true},
		{"our rule deleted by us", watcher.Event{Kind: watcher.KindRule, Deleted: true, Protocol: policy.Protocol, Effect: watcher.Echo}, true},
		{"our route deleted by us", watcher.Event{Kind: watcher.KindRoute, Deleted: true, Protocol: policy.Protocol, Effect: watcher.Echo}, true},
		{"a foreign route we deleted", watcher.Event{Kind: watcher.KindRoute, Deleted: true, Protocol: 3, Effect: watcher.Echo}, true},
		{"our rule deleted by someone else", watcher.Event{Kind: watcher.KindRule, Deleted: true, Protocol: policy.Protocol}, false},
		{"our route deleted by someone else", watcher.Event{Kind: watcher.KindRoute, Deleted: true, Protocol: policy.Protocol}, false},
		{"a kernel route added", watcher.Event{Kind: watcher.KindRoute, Protocol: 2}, false},
		{"a link event", watcher.Event{Kind: watcher.KindLink, Effect: watcher.Echo}, false},
		{"an address event", watcher.Event{Kind: watcher.KindAddr, Deleted: true, Effect: watcher.Echo}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ownEcho(tt.ev); got != tt.want {
				t.Errorf("ownEcho(%+v) = %v, want %v", tt.ev, got, tt.want)
			}
		})
	}
}

// TestNeedsPass: the events that bring a pass. What the mirror says it did
// (Effect) decides first: a notification that changed nothing it keeps
// brings none, whatever it is (the IPv6 it drops while no uplink has ipv6
// on among them); then uplinkd's own echoes.
func TestNeedsPass(t *testing.T) {
	tests := []struct {
		name string
		ev   watcher.Event
		want bool
	}{
		{"a link change", watcher.Event{Kind: watcher.KindLink}, true},
		{"a link message repeating the mirror", watcher.Event{Kind: watcher.KindLink, Effect: watcher.Unchanged}, false},
		{"a route of table local", watcher.Event{Kind: watcher.KindRoute, Table: 255, Protocol: 2, Effect: watcher.Unchanged}, false},
		{"a kernel route of table main", watcher.Event{Kind: watcher.KindRoute, Table: 254, Protocol: 2}, true},
		{"our route deleted by someone else", watcher.Event{Kind: watcher.KindRoute, Deleted: true, Protocol: policy.Protocol}, true},
		{"our route deleted by us", watcher.Event{Kind: watcher.KindRoute, Deleted: true, Protocol: policy.Protocol, Effect: watcher.Echo}, false},
		{"an address gone", watcher.Event{Kind: watcher.KindAddr, Deleted: true}, true},
		{"an address the mirror does not have gone", watcher.Event{Kind: watcher.KindAddr, Deleted: true, Effect: watcher.Unchanged}, false},
		{"an IPv6 address the mirror does not keep", watcher.Event{Kind: watcher.KindAddr, IPv6: true, Effect: watcher.Unchanged}, false},
		{"an IPv6 address the mirror keeps", watcher.Event{Kind: watcher.KindAddr, IPv6: true}, true},
		{"our IPv6 route deleted by someone else", watcher.Event{Kind: watcher.KindRoute, IPv6: true, Deleted: true, Protocol: policy.Protocol}, true},
		{"a resync", watcher.Event{Kind: watcher.KindResync}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := needsPass(tt.ev); got != tt.want {
				t.Errorf("needsPass(%+v) = %v, want %v", tt.ev, got, tt.want)
			}
		})
	}
}
