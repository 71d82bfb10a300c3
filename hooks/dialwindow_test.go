package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/testutil"
)

// The dial window (issue 23): an attempt's dial holds back the next attempt
// only until the uplink comes up, or the pppd it started or found exits, or
// the dial timeout, whichever comes first.

// nextWithin waits (real time) until the Reconnector's next attempt is due
// within d of the fake clock's now, and returns when it is.
func nextWithin(t *testing.T, clk *FakeClock, d time.Duration, what string) time.Duration {
	t.Helper()
	var got time.Duration
	testutil.WaitFor(t, what, 10*time.Second, func() bool {
		p := clk.Pending()
		if len(p) != 1 {
			return false
		}
		got = p[0]
		return got <= d
	})
	return got
}

// TestDialWindowEndsWhenUpOrPPPDExits is the sequence of issue 23 on a fake
// process table: pon starts a pppd, the link comes up (its address
// arrives), the ISP drops the session, its pppd exits: the redial comes
// within the backoff of that exit, not dial_timeout after the first pon.
func TestDialWindowEndsWhenUpOrPPPDExits(t *testing.T) {
	const (
		backoff = time.Second
		dial    = 30 * time.Second
	)
	tests := []struct {
		name string
		up   bool // the link comes up before its pppd exits
	}{
		{"dial ok, up, drop, pppd exits", true},
		{"dial ok, pppd exits before the link came up", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			procs := newFakeProcs(t)
			t.Setenv("PROCDIR", procs.proc)
			r, clk, trace := pppReconnector(t, procs,
				"mkdir -p $PROCDIR/200 && printf '/usr/sbin/pppd\\0call\\0dsl\\0' > $PROCDIR/200/cmdline",
				ReconnectSpec{Backoff: backoff, MaxBackoff: 4 * time.Second, DialTimeout: dial})
			r.pollPPPD = 5 * time.Millisecond
			r.Set(NeedDial)
			if d := waitTimer(t, clk); d != dial {
				t.Fatalf("after pon the next attempt is due in %v, want the dial timeout %v", d, dial)
			}
			testutil.WaitFor(t, "the window to see pon's pppd", 5*time.Second, func() bool { return r.State().PID == 200 })
			clk.Advance(3 * time.Second) // pppd negotiates
			if tt.up {
				r.Set(NeedNone) // ppp0 has its address
				if st := r.State(); st.State != ReconnectIdle {
					t.Fatalf("state with the link up: %+v", st)
				}
				clk.Advance(2 * time.Second)
				// The ISP drops the session: ppp0 goes, pppd 200 still
				// lives for a moment. An attempt starts at once and
				// leaves the dial to it.
				n := r.Attempts()
				r.Set(NeedDial)
				if r.Attempts() != n+1 {
					t.Fatal("a link that went away after a dial that succeeded did not start an attempt at once")
				}
				waitTimer(t, clk)
				if st := r.State(); st.State != ReconnectPPPD || st.PID != 200 {
					t.Fatalf("state while pppd 200 lives: %+v", st)
				}
			}
			clk.Advance(700 * time.Millisecond)
			if err := os.RemoveAll(filepath.Join(procs.proc, "200")); err != nil { // pppd exits
				t.Fatal(err)
			}
			testutil.WaitFor(t, "the window to see pppd 200 exit", 10*time.Second, func() bool { return r.State().State == ReconnectBackoff })
			// The backoff was reset when the uplink came up (or is still
			// the first one): the redial is due within it.
			d := nextWithin(t, clk, time.Duration(float64(backoff)*(1+JitterFraction)), "the next attempt within the backoff of the pppd exit")
			if st := r.State(); st.Until != clk.Now().Add(d) {
				t.Fatalf("state after pppd exited: %+v, want the next attempt in %v", st, d)
			}
			clk.Advance(d)
			waitTimer(t, clk)
			if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"pon", "pon"}) {
				t.Fatalf("trace %q, want the redial", got)
			}
		})
	}
}

// TestRealPPPDExitEndsDialWindow: the same with a real process standing in
// for pppd (argv `./pppd call PEER`, found in the real /proc) and the
// reconnect states `uplinkd status` shows.
func TestRealPPPDExitEndsDialWindow(t *testing.T) {
	dir := t.TempDir()
	peer := fmt.Sprintf("uplinkd-test-%d", os.Getpid())
	gone, pidFile := filepath.Join(dir, "gone"), filepath.Join(dir, "pppd.pid")
	// ./pppd is /bin/sh running the script "call" with $1 = PEER: its
	// /proc cmdline is `./pppd call PEER`, like the pppd pon starts.
	if err := os.Symlink("/bin/sh", filepath.Join(dir, "pppd")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "call"), []byte(
		"echo $$ > "+pidFile+"\nwhile [ ! -e "+gone+" ]; do sleep 0.05; done\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "trace")
	pon := testutil.Script(t, dir, "pon", "echo pon >> "+trace+"\ncd "+dir+" && [ ! -e "+pidFile+" ] && (./pppd call "+peer+" </dev/null >/dev/null 2>&1 &)\nexit 0")
	t.Cleanup(func() { os.WriteFile(gone, nil, 0o644) })

	clk := NewFakeClock(time.Time{})
	const backoff, dial = time.Second, 30 * time.Second
	r := NewReconnector(ReconnectSpec{Uplink: "dsl", Iface: "pppt9", Kind: "ppp", Peer: peer,
		Command: []string{pon}, Backoff: backoff, MaxBackoff: 4 * time.Second, DialTimeout: dial}, quiet(), clk, nil)
	r.procs = procTable{proc: "/proc", run: dir}
	r.pollPPPD = 10 * time.Millisecond
	defer r.Close()

	if st := r.State(); st.State != ReconnectIdle {
		t.Fatalf("new reconnector: %+v", st)
	}
	r.Set(NeedDial)
	waitTimer(t, clk)
	var pid int
	testutil.WaitFor(t, "the stand-in pppd's pid file", 5*time.Second, func() bool {
		pid, _ = strconv.Atoi(strings.TrimSpace(testutil.ReadFile(t, pidFile)))
		return pid > 0
	})
	testutil.WaitFor(t, "the window to wait for the stand-in pppd", 5*time.Second, func() bool { return r.State().PID == pid })
	st := r.State()
	if st.State != ReconnectPPPD || !st.Until.Equal(clk.Now().Add(dial)) {
		t.Fatalf("state during the dial: %+v (now %v)", st, clk.Now())
	}
	r.Set(NeedNone) // up
	r.Set(NeedDial) // dropped: pppd still lives
	waitTimer(t, clk)
	if st := r.State(); st.State != ReconnectPPPD || st.PID != pid {
		t.Fatalf("state while pppd %d lives after the drop: %+v", pid, st)
	}
	if got := testutil.Lines(t, trace); len(got) != 1 {
		t.Fatalf("dialled while a pppd for the peer lives: %q", got)
	}
	if err := os.WriteFile(gone, nil, 0o644); err != nil { // pppd exits
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the window to see the stand-in pppd exit", 10*time.Second, func() bool {
		return !alive(pid) && r.State().State == ReconnectBackoff
	})
	d := nextWithin(t, clk, time.Duration(float64(backoff)*(1+JitterFraction)), "the next attempt within the backoff of the pppd exit")
	clk.Advance(d)
	waitTimer(t, clk)
	if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"pon", "pon"}) {
		t.Fatalf("trace %q, want the redial after pppd exited", got)
	}
}

// TestSucceededReconnectDoesNotDelayNext: for every kind, a reconnect that
// worked (the uplink came back) holds back nothing: the next loss of the
// link starts an attempt at once.
func TestSucceededReconnectDoesNotDelayNext(t *testing.T) {
	for _, kind := range []string{"wlan", "ethernet", "ppp"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			trace := filepath.Join(dir, "trace")
			clk := NewFakeClock(time.Time{})
			r := NewReconnector(ReconnectSpec{Uplink: "u", Iface: "x0", Kind: kind, Peer: fmt.Sprintf("uplinkd-none-%d", os.Getpid()),
				Command: []string{testutil.Script(t, dir, "cmd", "echo run >> "+trace)}, Backoff: time.Minute, DialTimeout: time.Hour}, quiet(), clk, nil)
			r.procs = procTable{proc: "/proc", run: dir}
			defer r.Close()
			for i := 1; i <= 3; i++ {
				r.Set(NeedDial)
				waitTimer(t, clk)
				if got := len(testutil.Lines(t, trace)); got != i {
					t.Fatalf("loss %d: %d commands, want %d (one at once per loss)", i, got, i)
				}
				clk.Advance(time.Second)
				r.Set(NeedNone)
			}
		})
	}
}

// TestReloadDuringDialTakesOver (issue 17.4): a reconnector built for a
// reloaded config takes over the attempt that runs: however many reloads
// come during a dial, one dial process runs at a time, and the next attempt
// follows the running one's result.
func TestReloadDuringDialTakesOver(t *testing.T) {
	dir := t.TempDir()
	trace, gate := filepath.Join(dir, "trace"), filepath.Join(dir, "gate")
	// Each dial records how many dials run at its start (lock dirs count
	// them), then waits for the gate.
	dial := testutil.Script(t, dir, "dial", fmt.Sprintf(`mkdir %[1]s/run.$$
echo "start $(ls -d %[1]s/run.* | wc -l)" >> %[2]s
i=0; while [ ! -e %[3]s ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done
rmdir %[1]s/run.$$`, dir, trace, gate))
	clk := NewFakeClock(time.Time{})
	spec := ReconnectSpec{Uplink: "u", Iface: "wlan0", Kind: "wlan", Command: []string{dial}, Backoff: time.Second, MaxBackoff: time.Minute}
	r := NewReconnector(spec, quiet(), clk, nil)
	r.Set(NeedDial)
	testutil.WaitFor(t, "the first dial", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 1 })

	var mu sync.Mutex
	var events []HookEvent
	var retire sync.WaitGroup
	for i := range 4 {
		spec.Backoff = time.Duration(i+2) * time.Second // [uplink.reconnect] changed
		next := NewReconnector(spec, quiet(), clk, nil)
		next.OnAttempt(func(ev HookEvent) { mu.Lock(); events = append(events, ev); mu.Unlock() })
		next.Adopt(r)
		retire.Go(r.Close)
		r = next
		r.Set(NeedDial) // the pass after the reload
		if st := r.State(); st.State != ReconnectWaiting {
			t.Fatalf("reload %d: state %+v, want %s", i, st, ReconnectWaiting)
		}
	}
	defer r.Close()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	retire.Wait()
	// The first dial's end is the newest reconnector's: it schedules the
	// next attempt (backoff 5s) instead of dialling at once.
	d := waitTimer(t, clk)
	checkJitter(t, d, 5*time.Second, time.Minute)
	testutil.WaitFor(t, "the attempt's event on the newest reconnector", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == 1
	})
	clk.Advance(d)
	testutil.WaitFor(t, "the second dial", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 2 })
	if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"start 1", "start 1"}) {
		t.Fatalf("dials %q: want two, each alone", got)
	}
}
