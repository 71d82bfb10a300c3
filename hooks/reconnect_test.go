package hooks

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/testutil"
	"github.com/uplinkd/uplinkd/policy"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestDefaultCommands(t *testing.T) {
	tests := []struct {
		name                 string
		kind, iface, peer    string
		command, stop        []string
		wantCmd, wantStopCmd []string
	}{
		{"ppp peer", "ppp", "ppp1", "dsl2", nil, nil, []string{"pon", "dsl2"}, []string{"poff", "dsl2"}},
		{"ppp no peer falls back to iface", "ppp", "ppp0", "", nil, nil, []string{"pon", "ppp0"}, []string{"poff", "ppp0"}},
		{"ppp custom stop only", "ppp", "ppp0", "isp", nil, []string{"/bin/hangup"}, []string{"pon", "isp"}, []string{"/bin/hangup"}},
		{"wlan", "wlan", "wlan0", "", nil, nil, []string{"wpa_cli", "-i", "wlan0", "reassociate"}, nil},
		{"ethernet: nothing", "ethernet", "eth1", "", nil, nil, nil, nil},
		{"configured command wins, no implied stop", "ppp", "ppp0", "isp", []string{"/bin/redial", "x"}, nil, []string{"/bin/redial", "x"}, nil},
		{"configured command and stop", "ethernet", "eth1", "", []string{"dhclient", "eth1"}, []string{"dhclient", "-r", "eth1"}, []string{"dhclient", "eth1"}, []string{"dhclient", "-r", "eth1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, stop := DefaultCommands(tt.kind, tt.iface, tt.peer, tt.command, tt.stop)
			if !slices.Equal(cmd, tt.wantCmd) || !slices.Equal(stop, tt.wantStopCmd) {
				t.Fatalf("got %q / %q, want %q / %q", cmd, stop, tt.wantCmd, tt.wantStopCmd)
			}
			if len(tt.command) > 0 {
				cmd[0] = "mutated"
				if tt.command[0] == "mutated" {
					t.Fatal("result aliases the config's slice")
				}
			}
		})
	}
}

func TestReconnectSpecFor(t *testing.T) {
	d := func(s string) time.Duration { v, _ := time.ParseDuration(s); return v }
	tests := []struct {
		name    string
		u       policy.Uplink
		wantOK  bool
		wantCmd []string
	}{
		{"ppp without section: no reconnect", policy.Uplink{Name: "dsl", Interface: "ppp0", Kind: "ppp"}, false, nil},
		{"ppp with empty section uses the uplink name", policy.Uplink{Name: "dsl", Interface: "ppp0", Kind: "ppp", Reconnect: &policy.Reconnect{}}, true, []string{"pon", "dsl"}},
		{"ppp peer", policy.Uplink{Name: "dsl", Interface: "ppp0", Kind: "ppp", Reconnect: &policy.Reconnect{Peer: "prov", Backoff: d("2s")}}, true, []string{"pon", "prov"}},
		{"ethernet", policy.Uplink{Name: "wan", Interface: "eth1", Kind: "ethernet"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, ok := ReconnectSpecFor(&tt.u)
			if ok != tt.wantOK || !slices.Equal(spec.Command, tt.wantCmd) {
				t.Fatalf("got %v %q", ok, spec.Command)
			}
			if spec.Uplink != tt.u.Name || spec.Iface != tt.u.Interface {
				t.Fatalf("names: %+v", spec)
			}
		})
	}
}

// waitTimer waits for the Reconnector to schedule its next attempt and
// returns the delay.
func waitTimer(t *testing.T, clk *FakeClock) time.Duration {
	t.Helper()
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("no retry scheduled")
	}
	p := clk.Pending()
	if len(p) != 1 {
		t.Fatalf("want exactly one pending timer, got %v", p)
	}
	return p[0]
}

func checkJitter(t *testing.T, got, base, maxB time.Duration) {
	t.Helper()
	lo := time.Duration(float64(base) * (1 - JitterFraction))
	hi := min(time.Duration(float64(base)*(1+JitterFraction)), maxB)
	if got < lo || got > hi {
		t.Fatalf("delay %v outside [%v, %v] (base %v)", got, lo, hi, base)
	}
}

func TestBackoffSequence(t *testing.T) {
	s := time.Second
	tests := []struct {
		name             string
		backoff, maxB    time.Duration
		wantBases        []time.Duration
		wantBasesAfterUp []time.Duration
	}{
		{"doubling capped", 5 * s, 40 * s, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 40 * s}, []time.Duration{5 * s, 10 * s}},
		{"defaults 5s..5m", 0, 0, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 300 * s, 300 * s}, []time.Duration{5 * s}},
		{"backoff equals max", 3 * s, 3 * s, []time.Duration{3 * s, 3 * s, 3 * s}, []time.Duration{3 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewFakeClock(time.Time{})
			r := NewReconnector(ReconnectSpec{Uplink: "u", Iface: "ppp0", Kind: "wlan",
				Command: []string{"true"}, Backoff: tt.backoff, MaxBackoff: tt.maxB}, quiet(), clk, nil)
			defer r.Close()
			maxB := r.spec.MaxBackoff

			run := func(bases []time.Duration) {
				t.Helper()
				start := r.Attempts()
				r.Down(true)
				if got := r.Attempts(); got != start+1 {
					t.Fatalf("Down(true) did not start an attempt at once: %d", got)
				}
				for i, base := range bases {
					d := waitTimer(t, clk)
					checkJitter(t, d, base, maxB)
					// Repeating Down(true) while a retry is scheduled must
					// neither start an attempt nor move the timer.
					r.Down(true)
					if got := clk.Pending(); len(got) != 1 || got[0] != d {
						t.Fatalf("Down(true) changed the schedule: %v", got)
					}
					clk.Advance(d - 1)
					if got := r.Attempts(); got != start+1+i {
						t.Fatalf("attempt started before its backoff elapsed")
					}
					clk.Advance(1)
					if got := r.Attempts(); got != start+2+i {
						t.Fatalf("attempts = %d after retry %d, want %d", got, i, start+2+i)
					}
				}
			}
			run(tt.wantBases)

			// Back up: the scheduled retry is canceled and the backoff reset.
			waitTimer(t, clk)
			r.Down(false)
			if p := clk.Pending(); len(p) != 0 {
				t.Fatalf("Down(false) left timers %v", p)
			}
			n := r.Attempts()
			clk.Advance(time.Hour)
			if r.Attempts() != n {
				t.Fatal("attempt after Down(false)")
			}
			run(tt.wantBasesAfterUp)
		})
	}
}

func TestJitterExtremes(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		u    float64
		base time.Duration
		want time.Duration
	}{
		{"low end", 0, 10 * s, 8 * s},
		{"middle", 0.5, 10 * s, 10 * s},
		{"high end", 0.999999, 10 * s, 11999990 * time.Microsecond},
		{"capped at max", 0.999999, 60 * s, 60 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReconnector(ReconnectSpec{Command: []string{"true"}, Backoff: s, MaxBackoff: 60 * s}, quiet(), NewFakeClock(time.Time{}), nil)
			r.rand = func() float64 { return tt.u }
			got := r.jitter(tt.base)
			if d := got - tt.want; d < -time.Millisecond || d > time.Millisecond {
				t.Fatalf("jitter(%v) with u=%v = %v, want %v", tt.base, tt.u, got, tt.want)
			}
		})
	}
}

func TestNeverTwoAttemptsAtOnce(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	// mkdir is atomic: a second concurrent attempt would fail to take the lock.
	cmd := testutil.Script(t, dir, "slow", fmt.Sprintf(`
mkdir %[1]s/lock 2>/dev/null || echo overlap >> %[2]s
echo "begin $UPLINKD_ATTEMPT" >> %[2]s
sleep 0.3
echo "end $UPLINKD_ATTEMPT" >> %[2]s
rmdir %[1]s/lock`, dir, trace))
	clk := NewFakeClock(time.Time{})
	r := NewReconnector(ReconnectSpec{Uplink: "u", Iface: "ppp0", Command: []string{cmd}, Backoff: 5 * time.Second}, quiet(), clk, nil)
	defer r.Close()

	r.Down(true)
	// Hammer it while the slow attempt runs: repeated downs, a flap
	// (up, down again) and a lot of time passing.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); r.Down(true) }()
	}
	wg.Wait()
	r.Down(false)
	r.Down(true)
	clk.Advance(time.Hour)
	if got := r.Attempts(); got != 1 {
		t.Fatalf("attempts while one is running = %d, want 1", got)
	}
	// The flap reset the backoff, so the retry comes after ~5s, not 10s.
	d := waitTimer(t, clk)
	checkJitter(t, d, 5*time.Second, r.spec.MaxBackoff)
	clk.Advance(d)
	r.Down(true)
	waitTimer(t, clk)
	// UPLINKD_ATTEMPT counts within one down period; the flap started a new
	// one, so the second run is attempt 1 again.
	want := []string{"begin 1", "end 1", "begin 1", "end 1"}
	if got := testutil.Lines(t, trace); !slices.Equal(got, want) {
		t.Fatalf("trace %q, want %q", got, want)
	}
}

func TestStopThenStart(t *testing.T) {
	tests := []struct {
		name      string
		stopExit  int // -1: no stop command
		wantTrace []string
	}{
		{"stop ok", 0, []string{"stop 1", "start 1", "stop 2", "start 2"}},
		{"stop fails, start still runs", 1, []string{"stop 1", "start 1", "stop 2", "start 2"}},
		{"no stop command", -1, []string{"start 1", "start 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			trace := filepath.Join(dir, "trace")
			spec := ReconnectSpec{Uplink: "u", Iface: "ppp0",
				Command: []string{testutil.Script(t, dir, "start", `echo "start $UPLINKD_ATTEMPT" >> `+trace)}}
			if tt.stopExit >= 0 {
				spec.StopCommand = []string{testutil.Script(t, dir, "stop", fmt.Sprintf(`echo "stop $UPLINKD_ATTEMPT" >> %s; exit %d`, trace, tt.stopExit))}
			}
			clk := NewFakeClock(time.Time{})
			log, logs := testutil.NewCapture()
			r := NewReconnector(spec, log, clk, nil)
			defer r.Close()
			r.Down(true)
			clk.Advance(waitTimer(t, clk))
			waitTimer(t, clk)
			if got := testutil.Lines(t, trace); !slices.Equal(got, tt.wantTrace) {
				t.Fatalf("trace %q, want %q", got, tt.wantTrace)
			}
			// One record per attempt, carrying both results.
			// The record is written right after the retry is scheduled.
			var recs []map[string]any
			testutil.WaitFor(t, "2 attempt records", 5*time.Second, func() bool {
				recs = logs.Find(t, "reconnect attempt finished", map[string]any{"event": "reconnect", "uplink": "u", "iface": "ppp0"})
				return len(recs) == 2
			})
			rec := recs[0]
			if rec["result"] != "ok" || rec["exit_code"] != 0.0 || rec["attempt"] != 1.0 || rec["duration"] == nil || rec["retry_in"] == nil {
				t.Fatalf("attempt record %v", rec)
			}
			if tt.stopExit >= 0 && rec["stop_exit_code"] != float64(tt.stopExit) {
				t.Fatalf("stop_exit_code in %v", rec)
			}
		})
	}
}

func TestSuccessDoesNotEndCycle(t *testing.T) {
	// pon exits 0 at once; the link is not up yet, so retries continue until
	// Down(false).
	clk := NewFakeClock(time.Time{})
	r := NewReconnector(ReconnectSpec{Command: []string{"true"}, Backoff: time.Second}, quiet(), clk, nil)
	defer r.Close()
	r.Down(true)
	for range 3 {
		clk.Advance(waitTimer(t, clk))
	}
	if r.Attempts() != 4 {
		t.Fatalf("attempts = %d", r.Attempts())
	}
}

func TestNoCommandNoAttempt(t *testing.T) {
	clk := NewFakeClock(time.Time{})
	r := NewReconnector(ReconnectSpec{Kind: "ethernet"}, quiet(), clk, nil)
	r.Down(true)
	clk.Advance(time.Hour)
	r.Close()
	if r.Attempts() != 0 || len(clk.Pending()) != 0 {
		t.Fatalf("attempts %d pending %v", r.Attempts(), clk.Pending())
	}
}

func TestEnvAndLiteralArgv(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	pwned := filepath.Join(dir, "pwned")
	cmd := testutil.Script(t, dir, "show", `{
echo "EVENT=$UPLINKD_EVENT"
echo "UPLINK=$UPLINKD_UPLINK"
echo "IFACE=$UPLINKD_IFACE"
echo "ATTEMPT=$UPLINKD_ATTEMPT"
echo "EXTRA=$EXTRA"
echo "PATH_SET=${PATH:+yes}"
for a in "$@"; do printf 'arg=%s\n' "$a"; done
} > `+out)
	args := []string{"$(touch " + pwned + ")", "a b;c", "*", "`id`"}
	r := NewReconnector(ReconnectSpec{Uplink: "dsl", Iface: "ppp7", Command: append([]string{cmd}, args...)},
		quiet(), NewFakeClock(time.Time{}), func() []string { return []string{"EXTRA=from-env-func"} })
	r.Down(true)
	r.Close() // waits for the attempt
	want := []string{"EVENT=reconnect", "UPLINK=dsl", "IFACE=ppp7", "ATTEMPT=1", "EXTRA=from-env-func", "PATH_SET=yes"}
	for _, a := range args {
		want = append(want, "arg="+a)
	}
	if got := testutil.Lines(t, out); !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("an argument was interpreted by a shell")
	}
}

func TestOutputLogged(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 3*maxLineBytes)
	cmd := testutil.Script(t, dir, "talk", `echo hello; echo "two words"; echo oops >&2; printf 'no newline'
i=0; while [ $i -lt 300 ]; do echo "many $i" >&2; i=$((i+1)); done
echo `+long)
	log, logs := testutil.NewCapture()
	r := NewReconnector(ReconnectSpec{Uplink: "u", Iface: "wlan0", Command: []string{cmd}}, log, NewFakeClock(time.Time{}), nil)
	r.Down(true)
	r.Close()

	base := map[string]any{"event": "reconnect", "uplink": "u", "iface": "wlan0", "attempt": 1.0}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name  string
		match map[string]any
		want  int
	}{
		{"stdout line", with("stream", "stdout", "line", "hello"), 1},
		{"spaces kept", with("stream", "stdout", "line", "two words"), 1},
		{"stderr line", with("stream", "stderr", "line", "oops"), 1},
		{"long line cut", with("stream", "stdout", "line", "no newline"+long[:maxLineBytes-len("no newline")], "truncated", true), 1},
		{"stderr lines capped", with("stream", "stderr"), maxLines},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := logs.Find(t, "command output", tt.match); len(got) != tt.want {
				t.Fatalf("%d records match %v, want %d", len(got), tt.match, tt.want)
			}
		})
	}
	drop := logs.Find(t, "command output truncated", with("stream", "stderr"))
	if len(drop) != 1 || drop[0]["dropped_lines"] != float64(301-maxLines) {
		t.Fatalf("truncation record: %v", drop)
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pid")
	// The child keeps stdout open too, so this also checks that output
	// reading does not outlive the kill.
	cmd := testutil.Script(t, dir, "hang", `sleep 60 & echo $! > `+pidfile+`; echo started; wait`)
	readPid := func() int {
		pid, err := strconv.Atoi(strings.TrimSpace(testutil.ReadFile(t, pidfile)))
		if err != nil {
			t.Fatalf("pidfile: %v", err)
		}
		return pid
	}

	t.Run("runCommand", func(t *testing.T) {
		start := time.Now()
		res := runCommand(context.Background(), quiet(), []string{cmd}, nil, 300*time.Millisecond)
		if el := time.Since(start); el > 20*time.Second { // the command would hang for 60 s
			t.Fatalf("took %v", el)
		}
		if res.Outcome() != "timeout" || !res.TimedOut || res.ExitCode != -1 {
			t.Fatalf("result %+v (%s)", res, res.Outcome())
		}
		pid := readPid()
		testutil.WaitFor(t, "sleep child killed", 20*time.Second, func() bool { return !alive(pid) })
	})

	t.Run("reconnector", func(t *testing.T) {
		os.Remove(pidfile)
		log, logs := testutil.NewCapture()
		clk := NewFakeClock(time.Time{})
		r := NewReconnector(ReconnectSpec{Uplink: "u", Command: []string{cmd}, Timeout: 300 * time.Millisecond}, log, clk, nil)
		r.Down(true)
		waitTimer(t, clk)
		r.Close()
		pid := readPid()
		testutil.WaitFor(t, "sleep child killed", 20*time.Second, func() bool { return !alive(pid) })
		if recs := logs.Find(t, "reconnect attempt finished", map[string]any{"result": "timeout", "exit_code": -1.0}); len(recs) != 1 {
			t.Fatalf("no timeout record: %v", logs.Records(t))
		}
	})
}

func TestCloseKillsRunningAttempt(t *testing.T) {
	dir := t.TempDir()
	cmd := testutil.Script(t, dir, "hang", `exec sleep 60`)
	r := NewReconnector(ReconnectSpec{Command: []string{cmd}, Timeout: 400 * time.Millisecond}, quiet(), NewFakeClock(time.Time{}), nil)
	r.Down(true)
	start := time.Now()
	r.Close()
	if el := time.Since(start); el > 20*time.Second { // the command would hang for 60 s
		t.Fatalf("Close took %v", el)
	}
	r.Down(true)
	if r.Attempts() != 1 {
		t.Fatal("Down after Close started an attempt")
	}
}

func TestDetachedChildDoesNotBlock(t *testing.T) {
	// Like pon starting pppd: the command exits 0 at once, a child it left
	// behind still holds stdout. That is a success, the child is not ours to
	// kill, and we must not wait for it.
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "pid")
	cmd := testutil.Script(t, dir, "pon", `sleep 30 & echo $! > `+pidfile+`; echo dialing; exit 0`)
	start := time.Now()
	res := runCommand(context.Background(), quiet(), []string{cmd}, nil, 20*time.Second)
	pid, _ := strconv.Atoi(strings.TrimSpace(testutil.ReadFile(t, pidfile)))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if el := time.Since(start); el > pipeGrace+15*time.Second { // the child lives 30 s
		t.Fatalf("took %v", el)
	}
	if res.Outcome() != "ok" || res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	if !alive(pid) {
		t.Fatal("the detached child was killed")
	}
}

func TestCommandNotFound(t *testing.T) {
	res := runCommand(context.Background(), quiet(), []string{"/nonexistent/uplinkd-test"}, nil, 10*time.Second)
	if res.Outcome() != "error" || res.Err == nil || res.ExitCode != -1 {
		t.Fatalf("result %+v", res)
	}
	res = runCommand(context.Background(), quiet(), []string{"false"}, nil, 10*time.Second)
	if res.Outcome() != "failed" || res.ExitCode != 1 {
		t.Fatalf("result %+v", res)
	}
}

// TestCaptureCommand: CaptureCommand hands back stdout and stderr (the
// first maxCaptured bytes; a command printing more is not blocked by it)
// and the same result RunCommand gives, environment included.
func TestCaptureCommand(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, body  string
		wantOutcome string
		wantOut     string // the whole output, or its start when longer
		wantLen     int
	}{
		{"both streams", `echo "out $UPLINKD_IFACE"; echo err >&2; exit 3`, "failed", "out lan0\nerr\n", 13},
		{"more than kept", `head -c 100000 /dev/zero | tr '\0' x`, "ok", "xxxx", maxCaptured},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := testutil.Script(t, dir, strings.ReplaceAll(tt.name, " ", "-"), tt.body)
			res, out := CaptureCommand(context.Background(), quiet(), []string{cmd}, []string{"UPLINKD_IFACE=lan0"}, 20*time.Second)
			if res.Outcome() != tt.wantOutcome {
				t.Errorf("outcome %s (%+v), want %s", res.Outcome(), res, tt.wantOutcome)
			}
			if len(out) != tt.wantLen || !strings.HasPrefix(string(out), tt.wantOut) {
				t.Errorf("output %d bytes %.40q, want %d bytes starting %q", len(out), out, tt.wantLen, tt.wantOut)
			}
		})
	}
}
