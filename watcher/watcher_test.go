package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// ---- lab helpers: every kernel-touching test works in its own namespace ----

var nsCounter atomic.Int64

func nsPrefix() string { return fmt.Sprintf("wt-%d-", os.Getpid()) }

// TestMain: lab.GuardMain fails the run if the host namespace changed; its
// shared sweep removes wt- namespaces of dead runs and reports (and removes)
// any this run left behind (t.Cleanup already deletes them on every normal
// exit path).
func TestMain(m *testing.M) { os.Exit(lab.GuardMain(m)) }

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (creates network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		tb.Skip("needs iproute2's ip")
	}
}

// newNS creates a uniquely named namespace, deleted when the test ends, and
// returns its name and an open fd to it.
func newNS(tb testing.TB) (string, int) {
	tb.Helper()
	name := fmt.Sprintf("%s%d", nsPrefix(), nsCounter.Add(1))
	// Register the delete before the add so that no exit path leaks it.
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "No such file") {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ip(tb, "netns", "add", name)
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return name, int(h)
}

func ip(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// waitLong bounds every wait for an event: generous, so that a busy machine
// makes the tests slower, never failing.
const waitLong = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startRun runs Run in the background; cleanup cancels it and checks that it
// returns promptly and without error.
func startRun(tb testing.TB, opts Options, out chan Event) context.CancelFunc {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts, out) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Run returned %v", err)
			}
		case <-time.After(waitLong):
			tb.Errorf("Run did not return within %v of cancel", waitLong)
		}
	})
	return cancel
}

// waitFor reads events until one satisfies pred.
func waitFor(tb testing.TB, ch <-chan Event, what string, pred func(Event) bool) Event {
	tb.Helper()
	deadline := time.After(waitLong)
	var seen []Event
	for {
		select {
		case ev := <-ch:
			if pred(ev) {
				return ev
			}
			seen = append(seen, ev)
		case <-deadline:
			tb.Fatalf("timed out waiting for %s; saw %d other events: %+v", what, len(seen), seen)
		}
	}
}

// waitUntil reads events until one satisfies pred (true) or within has
// passed (false).
func waitUntil(ch <-chan Event, within time.Duration, pred func(Event) bool) bool {
	timeout := time.After(within)
	for {
		select {
		case ev := <-ch:
			if pred(ev) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// ---- kernel tests ----

func TestKernelEvents(t *testing.T) {
	requireRoot(t)
	ns, fd := newNS(t)
	out := make(chan Event)
	startRun(t, Options{NetNS: fd}, out)

	// The first event is the initial resync, sent once subscribed.
	select {
	case ev := <-out:
		if ev.Kind != KindResync || ev.At.IsZero() {
			t.Fatalf("first event = %+v, want initial KindResync", ev)
		}
	case <-time.After(waitLong):
		t.Fatal("no initial KindResync")
	}

	h, err := vnl.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// Link.
	ip(t, "-n", ns, "link", "add", "wv0", "type", "veth", "peer", "name", "wv1")
	before := time.Now()
	ev := waitFor(t, out, "link wv0 added", func(e Event) bool {
		return e.Kind == KindLink && !e.Deleted && e.Iface == "wv0"
	})
	l, err := h.LinkByName("wv0")
	if err != nil {
		t.Fatal(err)
	}
	idx := l.Attrs().Index
	if ev.Index != idx || idx == 0 {
		t.Errorf("link event index %d, want %d", ev.Index, idx)
	}
	if ev.At.IsZero() || ev.At.Before(before.Add(-time.Second)) || ev.At.After(time.Now()) {
		t.Errorf("link event At %v not around now", ev.At)
	}
	if ev.Table != 0 || ev.Protocol != 0 {
		t.Errorf("link event has table/protocol: %+v", ev)
	}
	ip(t, "-n", ns, "link", "set", "wv1", "up")
	ip(t, "-n", ns, "link", "set", "wv0", "up")
	waitFor(t, out, "link wv0 up", func(e Event) bool {
		return e.Kind == KindLink && !e.Deleted && e.Iface == "wv0" && e.Index == idx
	})

	// Address (also produces local/prefix route events, skipped by waitFor).
	ip(t, "-n", ns, "addr", "add", "10.9.0.1/24", "dev", "wv0")
	ev = waitFor(t, out, "addr added", func(e Event) bool { return e.Kind == KindAddr && !e.Deleted })
	if ev.Index != idx || ev.Iface != "" {
		t.Errorf("addr event %+v, want index %d and no iface", ev, idx)
	}

	// Routes: a table that fits the header byte and one that needs RTA_TABLE.
	ip(t, "-n", ns, "route", "add", "10.50.0.0/16", "dev", "wv0", "table", "100", "proto", "157")
	ev = waitFor(t, out, "route in table 100", func(e Event) bool { return e.Kind == KindRoute && e.Table == 100 })
	if ev.Deleted || ev.Index != idx || ev.Protocol != 157 || ev.Iface != "" {
		t.Errorf("route event %+v, want index %d protocol 157", ev, idx)
	}
	ip(t, "-n", ns, "route", "add", "10.51.0.0/16", "via", "10.9.0.2", "dev", "wv0", "table", "1000")
	ev = waitFor(t, out, "route in table 1000", func(e Event) bool { return e.Kind == KindRoute && e.Table == 1000 })
	if ev.Deleted || ev.Index != idx || ev.Protocol != 3 /* RTPROT_BOOT, ip's default */ {
		t.Errorf("route event %+v, want index %d protocol 3", ev, idx)
	}
	// Multipath: no single output device.
	ip(t, "-n", ns, "route", "add", "10.52.0.0/16", "table", "101",
		"nexthop", "via", "10.9.0.2", "dev", "wv0", "nexthop", "via", "10.9.0.3", "dev", "wv0")
	ev = waitFor(t, out, "multipath route", func(e Event) bool { return e.Kind == KindRoute && e.Table == 101 })
	if ev.Index != 0 {
		t.Errorf("multipath route event index %d, want 0", ev.Index)
	}

	// Rules.
	ip(t, "-n", ns, "rule", "add", "from", "10.9.9.9", "lookup", "100", "pref", "300", "proto", "157")
	ev = waitFor(t, out, "rule added", func(e Event) bool { return e.Kind == KindRule })
	if ev.Deleted || ev.Table != 100 || ev.Protocol != 157 || ev.Index != 0 || ev.Iface != "" {
		t.Errorf("rule event %+v, want table 100 protocol 157", ev)
	}
	ip(t, "-n", ns, "rule", "add", "fwmark", "7", "lookup", "1000", "pref", "301")
	ev = waitFor(t, out, "rule table 1000", func(e Event) bool { return e.Kind == KindRule })
	if ev.Table != 1000 {
		t.Errorf("rule event %+v, want table 1000", ev)
	}

	// Deletes.
	ip(t, "-n", ns, "rule", "del", "pref", "300")
	ev = waitFor(t, out, "rule deleted", func(e Event) bool { return e.Kind == KindRule && e.Deleted })
	if ev.Table != 100 || ev.Protocol != 157 {
		t.Errorf("rule delete event %+v", ev)
	}
	ip(t, "-n", ns, "route", "del", "10.50.0.0/16", "table", "100")
	ev = waitFor(t, out, "route deleted", func(e Event) bool { return e.Kind == KindRoute && e.Deleted })
	if ev.Table != 100 || ev.Index != idx || ev.Protocol != 157 {
		t.Errorf("route delete event %+v", ev)
	}
	ip(t, "-n", ns, "addr", "del", "10.9.0.1/24", "dev", "wv0")
	ev = waitFor(t, out, "addr deleted", func(e Event) bool { return e.Kind == KindAddr && e.Deleted })
	if ev.Index != idx {
		t.Errorf("addr delete event %+v", ev)
	}
	ip(t, "-n", ns, "link", "del", "wv0")
	ev = waitFor(t, out, "link deleted", func(e Event) bool { return e.Kind == KindLink && e.Deleted && e.Iface == "wv0" })
	if ev.Index != idx {
		t.Errorf("link delete event %+v", ev)
	}
}

func TestKernelOverflowResync(t *testing.T) {
	requireRoot(t)
	ns, fd := newNS(t)
	out := make(chan Event) // unbuffered: Run blocks on the first send while we stall
	startRun(t, Options{NetNS: fd, ReadBuffer: 4096}, out)
	if ev := waitFor(t, out, "initial resync", func(Event) bool { return true }); ev.Kind != KindResync {
		t.Fatalf("first event %+v, want KindResync", ev)
	}

	// Stall (we do not read out) while the kernel emits thousands of
	// notifications into a tiny receive buffer.
	const n = 3000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "route add blackhole 10.1.%d.%d/32 table 200\n", i/256, i%256)
	}
	batch := filepath.Join(t.TempDir(), "routes")
	if err := os.WriteFile(batch, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ip(t, "-n", ns, "-batch", batch)

	// Drain up to the resync the overflow causes, then up to a marker
	// route added after it: the subscription still works, and every
	// event of the batch that was going to arrive has arrived.
	routes, resyncs := 0, 0
	count := func(ev Event) {
		switch {
		case ev.Kind == KindResync:
			resyncs++
		case ev.Kind == KindRoute && ev.Table == 200:
			routes++
		}
	}
	waitFor(t, out, "KindResync after the overflow", func(e Event) bool {
		count(e)
		return e.Kind == KindResync
	})
	// The kernel drops every notification, without a second ENOBUFS,
	// until the reader has emptied the socket's queue (the socket stays
	// "congested"), and the queue still holds older notifications when the
	// resync is read: so add marker routes until one comes through.
	marker := func(e Event) bool { count(e); return e.Kind == KindRoute && e.Table == 201 && !e.Deleted }
	deadline := time.Now().Add(waitLong)
	for i := 1; ; i++ {
		ip(t, "-n", ns, "route", "add", "blackhole", fmt.Sprintf("10.2.%d.%d/32", i/256, i%256), "table", "201")
		if waitUntil(out, time.Second, marker) {
			t.Logf("%d marker routes lost after the resync", i-1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no route event in %v after the overflow's resync", waitLong)
		}
	}
	t.Logf("after %d route adds into a 4 KiB buffer: %d route events, %d resyncs", n, routes, resyncs)
	if routes >= n {
		t.Errorf("all %d route events arrived; the buffer did not overflow", routes)
	}
}

// Run must return on cancel both while blocked in Receive and while blocked
// sending to a consumer that does not read. The namespace is idle, so
// nothing but the cancel can wake it: returning at all is the proof (how
// fast is no pass/fail matter).
func TestKernelCancel(t *testing.T) {
	requireRoot(t)
	_, fd := newNS(t)
	for _, readFirst := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		out := make(chan Event)
		done := make(chan error, 1)
		sink := &countingSink{}
		go func() { done <- Run(ctx, Options{NetNS: fd, Logger: quietLogger(), Sink: sink}, out) }()
		if readFirst {
			<-out // then blocked in Receive (the namespace is idle)
		} else {
			// Subscribed: the sink hears of it just before Run sends
			// the resync that nobody reads.
			for deadline := time.Now().Add(waitLong); sink.resyncs.Load() == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("Run never subscribed")
				}
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(waitLong):
			t.Fatalf("Run (readFirst=%v) did not return after cancel", readFirst)
		}
	}
}

func TestRunErrors(t *testing.T) {
	if err := Run(context.Background(), Options{}, nil); err == nil {
		t.Error("Run with nil channel: no error")
	}
	requireRoot(t)
	// A bad namespace fd fails the first subscription.
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := Run(ctx, Options{NetNS: int(f.Fd()), Logger: quietLogger()}, make(chan Event)); err == nil {
		t.Error("Run with a non-netns fd: no error")
	}
}

// ---- fake-socket tests for the resubscribe logic ----

type recvResult struct {
	msgs []netlink.Message
	err  error
}

// fakeConn replays scripted Receive results, then blocks until its read
// deadline is set (which Run does when ctx is done).
type fakeConn struct {
	script   []recvResult
	deadline chan struct{}
	dlOnce   sync.Once
	closed   atomic.Bool
}

func newFakeConn(script ...recvResult) *fakeConn {
	return &fakeConn{script: script, deadline: make(chan struct{})}
}

func (c *fakeConn) Receive() ([]netlink.Message, error) {
	if len(c.script) > 0 {
		r := c.script[0]
		c.script = c.script[1:]
		return r.msgs, r.err
	}
	<-c.deadline
	return nil, &netlink.OpError{Op: "receive", Err: os.ErrDeadlineExceeded}
}

func (c *fakeConn) SetReadDeadline(time.Time) error {
	c.dlOnce.Do(func() { close(c.deadline) })
	return nil
}

func (c *fakeConn) Close() error { c.closed.Store(true); return nil }

func TestRunResubscribes(t *testing.T) {
	route := netlink.Message{
		Header: netlink.Header{Type: unix.RTM_NEWROUTE},
		Data:   rawRoute(100, 157, attr{unix.RTA_OIF, u32(4)}),
	}
	// What mdlayher/netlink returns when recvmsg fails with ENOBUFS.
	enobufs := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", unix.ENOBUFS)}
	died := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", unix.EBADF)}
	conns := []*fakeConn{
		newFakeConn(
			recvResult{msgs: []netlink.Message{route}},
			recvResult{err: enobufs}, // overflow: a new socket at once, resync
		),
		newFakeConn(
			recvResult{msgs: []netlink.Message{route}},
			recvResult{err: died}, // socket died: redial with backoff
		),
		nil, // a failing dial
		nil, // another failing dial
		newFakeConn(recvResult{msgs: []netlink.Message{route}}),
	}
	var mu sync.Mutex
	var dials []time.Time
	dial := func(Options, *slog.Logger) (conn, error) {
		mu.Lock()
		defer mu.Unlock()
		i := len(dials)
		dials = append(dials, time.Now())
		if i >= len(conns) {
			return nil, errors.New("no more sockets")
		}
		if conns[i] == nil {
			return nil, fmt.Errorf("dial %d refused", i)
		}
		return conns[i], nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event)
	done := make(chan error, 1)
	go func() { done <- run(ctx, Options{}, out, quietLogger(), dial) }()

	want := []Kind{KindResync, KindRoute, KindResync, KindRoute, KindResync, KindRoute}
	for i, k := range want {
		select {
		case ev := <-out:
			if ev.Kind != k {
				t.Fatalf("event %d = %v, want %v", i, ev.Kind, k)
			}
			if k == KindRoute && (ev.Table != 100 || ev.Protocol != 157 || ev.Index != 4 || ev.At.IsZero()) {
				t.Errorf("event %d = %+v", i, ev)
			}
		case <-time.After(waitLong):
			t.Fatalf("timed out waiting for event %d (%v)", i, k)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("run did not return after cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dials) != 5 {
		t.Fatalf("%d dials, want 5", len(dials))
	}
	// Backoff 10ms, 20ms, 40ms before dials 2, 3, 4 (the socket that
	// overflowed is replaced without one).
	for i, least := range []time.Duration{10, 20, 40} {
		if gap := dials[i+2].Sub(dials[i+1]); gap < least*time.Millisecond {
			t.Errorf("dial %d came %v after the previous one, want >= %vms", i+2, gap, int(least))
		}
	}
	if !conns[0].closed.Load() || !conns[1].closed.Load() || !conns[4].closed.Load() {
		t.Error("sockets not closed")
	}
}

func TestRunFirstDialFails(t *testing.T) {
	dial := func(Options, *slog.Logger) (conn, error) { return nil, errors.New("EPERM") }
	err := run(context.Background(), Options{}, make(chan Event), quietLogger(), dial)
	if err == nil || !strings.Contains(err.Error(), "EPERM") {
		t.Fatalf("run = %v, want the dial error", err)
	}
}

func TestKindString(t *testing.T) {
	for k, s := range map[Kind]string{KindLink: "link", KindAddr: "addr", KindRoute: "route",
		KindRule: "rule", KindResync: "resync", Kind(42): "kind(42)"} {
		if got := k.String(); got != s {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, s)
		}
	}
}

// countingSink counts what the watcher feeds it.
type countingSink struct{ updates, resyncs atomic.Int32 }

func (s *countingSink) Update(netlink.Message) Effect { s.updates.Add(1); return Changed }
func (s *countingSink) Resync()                       { s.resyncs.Add(1) }

// TestSinkBeforeEvents: the sink hears of every notification before its
// event is delivered, and of every (re)subscription and overflow before the
// KindResync event.
func TestSinkBeforeEvents(t *testing.T) {
	route := netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWROUTE}, Data: rawRoute(100, 157, attr{unix.RTA_OIF, u32(4)})}
	enobufs := &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", unix.ENOBUFS)}
	c := newFakeConn(recvResult{msgs: []netlink.Message{route, route}}, recvResult{err: enobufs}, recvResult{msgs: []netlink.Message{route}})
	dial := func(Options, *slog.Logger) (conn, error) { return c, nil }
	sink := &countingSink{}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event)
	done := make(chan error, 1)
	go func() { done <- run(ctx, Options{Sink: sink}, out, quietLogger(), dial) }()
	// Per event: its kind and the least the sink must have seen when it
	// arrives.
	for i, want := range []struct {
		kind             Kind
		updates, resyncs int32
	}{{KindResync, 0, 1}, {KindRoute, 1, 1}, {KindRoute, 2, 1}, {KindResync, 2, 2}, {KindRoute, 3, 2}} {
		select {
		case ev := <-out:
			u, r := sink.updates.Load(), sink.resyncs.Load()
			if ev.Kind != want.kind || u < want.updates || r < want.resyncs {
				t.Fatalf("event %d: %v with %d updates, %d resyncs seen; want %v after at least %d, %d",
					i, ev.Kind, u, r, want.kind, want.updates, want.resyncs)
			}
		case <-time.After(waitLong):
			t.Fatal("timed out")
		}
	}
	cancel()
	<-done
}

// effectSink says of a route notification the effect its routing
// protocol maps to (Changed for the rest).
type effectSink map[uint8]Effect

func (s effectSink) Update(m netlink.Message) Effect {
	if len(m.Data) > rtmsgProtoOffset {
		return s[m.Data[rtmsgProtoOffset]]
	}
	return Changed
}
func (effectSink) Resync() {}

// TestEventEffectFromSink: an event carries what the sink said of its own
// notification, also when its datagram holds several.
func TestEventEffectFromSink(t *testing.T) {
	msg := func(typ netlink.HeaderType, proto uint8) netlink.Message {
		return netlink.Message{Header: netlink.Header{Type: typ}, Data: rawRoute(100, proto, attr{unix.RTA_OIF, u32(4)})}
	}
	c := newFakeConn(
		recvResult{msgs: []netlink.Message{msg(unix.RTM_DELROUTE, 157)}},
		recvResult{msgs: []netlink.Message{msg(unix.RTM_DELROUTE, 4), msg(unix.RTM_NEWROUTE, 157), msg(unix.RTM_NEWROUTE, 2), msg(unix.RTM_NEWROUTE, 4)}},
	)
	dial := func(Options, *slog.Logger) (conn, error) { return c, nil }
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event)
	done := make(chan error, 1)
	go func() { done <- run(ctx, Options{Sink: effectSink{157: Echo, 2: Unchanged}}, out, quietLogger(), dial) }()
	for i, want := range []struct {
		kind    Kind
		deleted bool
		effect  Effect
	}{{KindResync, false, Changed}, {KindRoute, true, Echo}, {KindRoute, true, Changed}, {KindRoute, false, Echo}, {KindRoute, false, Unchanged}, {KindRoute, false, Changed}} {
		select {
		case ev := <-out:
			if ev.Kind != want.kind || ev.Deleted != want.deleted || ev.Effect != want.effect {
				t.Fatalf("event %d: %v deleted=%v effect=%v, want %v deleted=%v effect=%v",
					i, ev.Kind, ev.Deleted, ev.Effect, want.kind, want.deleted, want.effect)
			}
		case <-time.After(waitLong):
			t.Fatal("timed out")
		}
	}
	cancel()
	<-done
}

// TestEventEffectWithoutSink: with no sink every event is a change.
func TestEventEffectWithoutSink(t *testing.T) {
	c := newFakeConn(recvResult{msgs: []netlink.Message{{Header: netlink.Header{Type: unix.RTM_DELROUTE}, Data: rawRoute(100, 157, attr{unix.RTA_OIF, u32(4)})}}})
	dial := func(Options, *slog.Logger) (conn, error) { return c, nil }
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event)
	done := make(chan error, 1)
	go func() { done <- run(ctx, Options{}, out, quietLogger(), dial) }()
	for i := range 2 {
		select {
		case ev := <-out:
			if ev.Effect != Changed {
				t.Fatalf("event %d (%v) has effect %v with no sink", i, ev.Kind, ev.Effect)
			}
		case <-time.After(waitLong):
			t.Fatal("timed out")
		}
	}
	cancel()
	<-done
}
