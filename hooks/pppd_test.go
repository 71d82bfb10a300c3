package hooks

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uplinkd/uplinkd/internal/testutil"
)

// fakeProcs is a fake /proc and /run: processes are directories with a
// cmdline file, pid files are files.
type fakeProcs struct {
	t         *testing.T
	proc, run string
}

func newFakeProcs(t *testing.T) *fakeProcs {
	t.Helper()
	dir := t.TempDir()
	p := &fakeProcs{t: t, proc: filepath.Join(dir, "proc"), run: filepath.Join(dir, "run")}
	for _, d := range []string{p.proc, p.run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Something that is not pppd, always there.
	p.add(1, "/sbin/init")
	return p
}

func (p *fakeProcs) table() procTable { return procTable{proc: p.proc, run: p.run} }

func (p *fakeProcs) add(pid int, argv ...string) {
	p.t.Helper()
	d := filepath.Join(p.proc, strconv.Itoa(pid))
	if err := os.MkdirAll(d, 0o755); err != nil {
		p.t.Fatal(err)
	}
	data := ""
	if len(argv) > 0 {
		data = strings.Join(argv, "\x00") + "\x00"
	}
	if err := os.WriteFile(filepath.Join(d, "cmdline"), []byte(data), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProcs) pidFile(name string, pid int) {
	p.t.Helper()
	if err := os.WriteFile(filepath.Join(p.run, name), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func TestPPPDLookup(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(p *fakeProcs)
		wantPid int
	}{
		{"none", func(p *fakeProcs) {}, 0},
		{"pon's pppd call PEER", func(p *fakeProcs) { p.add(42, "/usr/sbin/pppd", "call", "dsl") }, 42},
		{"options before call", func(p *fakeProcs) { p.add(43, "pppd", "nodetach", "call", "dsl", "debug") }, 43},
		{"another peer's pppd", func(p *fakeProcs) { p.add(44, "/usr/sbin/pppd", "call", "other") }, 0},
		{"not pppd", func(p *fakeProcs) { p.add(45, "/bin/sh", "-c", "call", "dsl") }, 0},
		{"zombie (empty cmdline)", func(p *fakeProcs) { p.add(46) }, 0},
		{"pid file of the interface", func(p *fakeProcs) {
			p.add(47, "/usr/sbin/pppd", "file", "/etc/ppp/custom")
			p.pidFile("ppp0.pid", 47)
		}, 47},
		{"pid file of the linkname", func(p *fakeProcs) {
			p.add(48, "/usr/sbin/pppd", "file", "/etc/ppp/custom")
			p.pidFile("ppp-dsl.pid", 48)
		}, 48},
		{"stale pid file", func(p *fakeProcs) { p.pidFile("ppp0.pid", 49) }, 0},
		{"pid file reused by another program", func(p *fakeProcs) {
			p.add(50, "/usr/bin/vim")
			p.pidFile("ppp0.pid", 50)
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFakeProcs(t)
			tt.setup(p)
			pid, ok := p.table().pppd("dsl", "ppp0")
			if pid != tt.wantPid || ok != (tt.wantPid != 0) {
				t.Fatalf("pppd() = %d, %v; want %d", pid, ok, tt.wantPid)
			}
		})
	}
}

// pppReconnector is a ppp Reconnector for peer dsl on ppp0 whose pon and
// poff append to a trace file; the fake process table decides whether a
// pppd is alive.
func pppReconnector(t *testing.T, procs *fakeProcs, ponBody string, spec ReconnectSpec) (*Reconnector, *FakeClock, string) {
	t.Helper()
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	spec.Uplink, spec.Iface, spec.Kind, spec.Peer = "dsl", "ppp0", "ppp", "dsl"
	spec.Command = []string{testutil.Script(t, dir, "pon", `echo pon >> `+trace+"\n"+ponBody)}
	spec.StopCommand = []string{testutil.Script(t, dir, "poff", `echo poff >> `+trace)}
	clk := NewFakeClock(time.Time{})
	r := NewReconnector(spec, quiet(), clk, nil)
	r.procs = procs.table()
	t.Cleanup(r.Close)
	return r, clk, trace
}

// TestLivePPPDLeftAlone: while a pppd for the peer lives (a persist pppd
// redialling, or a dial in progress), a link that is gone gets neither
// poff nor pon, however long it stays down.
func TestLivePPPDLeftAlone(t *testing.T) {
	tests := []struct {
		name  string
		setup func(p *fakeProcs)
	}{
		{"persist pppd from pon", func(p *fakeProcs) { p.add(100, "/usr/sbin/pppd", "call", "dsl") }},
		{"pppd known by its pid file", func(p *fakeProcs) {
			p.add(101, "/usr/sbin/pppd", "file", "/etc/ppp/dsl")
			p.pidFile("ppp0.pid", 101)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			procs := newFakeProcs(t)
			tt.setup(procs)
			r, clk, trace := pppReconnector(t, procs, "", ReconnectSpec{Backoff: time.Second, MaxBackoff: 4 * time.Second})
			r.Set(NeedDial)
			for range 20 {
				clk.Advance(waitTimer(t, clk))
			}
			if got := testutil.Lines(t, trace); len(got) != 0 {
				t.Fatalf("commands run while pppd lives: %q", got)
			}
			if r.Attempts() < 20 {
				t.Fatalf("looked %d times, want a look after every backoff", r.Attempts())
			}
		})
	}
}

// TestNoPPPDDialsOnceThenWaits: without a pppd, the first attempt runs pon
// alone (no poff), and the next waits for the dial timeout (and the
// backoff): never a second pon while the first dial may still come up.
func TestNoPPPDDialsOnceThenWaits(t *testing.T) {
	const dial = 30 * time.Second
	tests := []struct {
		name     string
		ponBody  string // runs after "echo pon"
		wantNext []string
	}{
		// pon started pppd, which is still negotiating at the dial timeout:
		// the next attempt finds it and leaves it alone.
		{"dial in progress", "mkdir -p $PROCDIR/200 && printf '/usr/sbin/pppd\\0call\\0dsl\\0' > $PROCDIR/200/cmdline", []string{"pon"}},
		// pon exited 0 but its pppd died at once: after the dial timeout,
		// dial again.
		{"dial gave up", "", []string{"pon", "pon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			procs := newFakeProcs(t)
			t.Setenv("PROCDIR", procs.proc)
			r, clk, trace := pppReconnector(t, procs, tt.ponBody, ReconnectSpec{Backoff: 5 * time.Second, MaxBackoff: time.Minute, DialTimeout: dial})
			r.Set(NeedDial)
			d := waitTimer(t, clk)
			if d != dial {
				t.Fatalf("next attempt in %v, want the dial timeout %v", d, dial)
			}
			if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"pon"}) {
				t.Fatalf("first attempt ran %q, want pon alone", got)
			}
			// Repeated needs (every pass says so) change nothing.
			r.Set(NeedDial)
			clk.Advance(dial - time.Second)
			if got := testutil.Lines(t, trace); len(got) != 1 {
				t.Fatalf("second dial within the dial timeout: %q", got)
			}
			clk.Advance(time.Second)
			waitTimer(t, clk)
			if got := testutil.Lines(t, trace); !slices.Equal(got, tt.wantNext) {
				t.Fatalf("after the dial timeout: %q, want %q", got, tt.wantNext)
			}
		})
	}
}

// TestAddressCancelsPending: the moment the link has its address, nothing
// further runs: no scheduled attempt, and an attempt caught between poff
// and pon skips pon.
func TestAddressCancelsPending(t *testing.T) {
	t.Run("scheduled attempt", func(t *testing.T) {
		procs := newFakeProcs(t)
		r, clk, trace := pppReconnector(t, procs, "", ReconnectSpec{Backoff: time.Second})
		r.Set(NeedDial)
		waitTimer(t, clk)
		r.Set(NeedNone)
		if p := clk.Pending(); len(p) != 0 {
			t.Fatalf("timers left after the address arrived: %v", p)
		}
		clk.Advance(time.Hour)
		if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"pon"}) {
			t.Fatalf("trace %q, want the one pon before the address", got)
		}
	})
	t.Run("between poff and pon", func(t *testing.T) {
		procs := newFakeProcs(t)
		procs.add(300, "/usr/sbin/pppd", "call", "dsl")
		dir := t.TempDir()
		trace, gate, started := filepath.Join(dir, "trace"), filepath.Join(dir, "gate"), filepath.Join(dir, "started")
		clk := NewFakeClock(time.Time{})
		r := NewReconnector(ReconnectSpec{Uplink: "dsl", Iface: "ppp0", Kind: "ppp", Peer: "dsl",
			Command: []string{testutil.Script(t, dir, "pon", "echo pon >> "+trace)},
			StopCommand: []string{testutil.Script(t, dir, "poff", "echo poff >> "+trace+"; touch "+started+
				"; i=0; while [ ! -e "+gate+" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done")},
		}, quiet(), clk, nil)
		r.procs = procs.table()
		defer r.Close()
		r.Set(NeedRestart)
		testutil.WaitFor(t, "poff started", 5*time.Second, func() bool { _, err := os.Stat(started); return err == nil })
		r.Set(NeedNone)
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"poff"}) {
			t.Fatalf("trace %q, want poff only", got)
		}
	})
}

// TestRestartOnlyAFailingLink: a live pppd is stopped only when the daemon
// says the link is up but failing (NeedRestart, after reconnect_after).
func TestRestartOnlyAFailingLink(t *testing.T) {
	procs := newFakeProcs(t)
	procs.add(400, "/usr/sbin/pppd", "call", "dsl")
	r, clk, trace := pppReconnector(t, procs, "", ReconnectSpec{Backoff: time.Second})
	r.Set(NeedRestart)
	waitTimer(t, clk)
	if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"poff", "pon"}) {
		t.Fatalf("trace %q, want poff then pon", got)
	}
}

// TestPPPBackoffAfterDial: without any pppd ever appearing, dials go on
// with the backoff, never closer together than the dial timeout; a pon that
// fails (no dial started) gets the plain backoff.
func TestPPPBackoffAfterDial(t *testing.T) {
	const dial = 10 * time.Second
	procs := newFakeProcs(t)
	r, clk, trace := pppReconnector(t, procs, "", ReconnectSpec{Backoff: 5 * time.Second, MaxBackoff: 40 * time.Second, DialTimeout: dial})
	r.rand = func() float64 { return 0.5 } // no jitter
	r.Set(NeedDial)
	var got []time.Duration
	for range 5 {
		d := waitTimer(t, clk)
		got = append(got, d)
		clk.Advance(d)
	}
	waitTimer(t, clk)
	want := []time.Duration{10 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	if n := len(testutil.Lines(t, trace)); n != 6 {
		t.Fatalf("%d dials, want 6", n)
	}
}

func TestFailedDialGetsBackoff(t *testing.T) {
	procs := newFakeProcs(t)
	r, clk, _ := pppReconnector(t, procs, "exit 1", ReconnectSpec{Backoff: 5 * time.Second, MaxBackoff: 40 * time.Second, DialTimeout: time.Minute})
	r.rand = func() float64 { return 0.5 }
	r.Set(NeedDial)
	if d := waitTimer(t, clk); d != 5*time.Second {
		t.Fatalf("after a failed pon the next attempt comes in %v, want the backoff 5s", d)
	}
}

// TestDialOutlivesTheDaemon: what the reconnect command leaves running (pppd
// from pon) is in a session of its own, not the daemon's, and Kill (the
// daemon's exit) does not touch it once the command has exited.
func TestDialOutlivesTheDaemon(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pid")
	pon := testutil.Script(t, dir, "pon", `sleep 30 & echo $! > `+pidfile+`; exit 0`)
	clk := NewFakeClock(time.Time{})
	r := NewReconnector(ReconnectSpec{Uplink: "u", Iface: "wlan0", Command: []string{pon}}, quiet(), clk, nil)
	r.Set(NeedDial)
	waitTimer(t, clk) // the command has finished
	pid, err := strconv.Atoi(strings.TrimSpace(testutil.ReadFile(t, pidfile)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	r.Kill()
	r.Close()
	if !alive(pid) {
		t.Fatal("the dial's process died with the reconnector")
	}
	sid, err := unix.Getsid(pid)
	if err != nil {
		t.Fatal(err)
	}
	if own, _ := unix.Getsid(0); sid == own {
		t.Fatalf("the dial's process is in the daemon's session %d", own)
	}
}
