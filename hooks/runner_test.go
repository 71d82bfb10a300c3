package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/testutil"
)

// sentinel is fired last in a test; since hooks of one uplink run in order,
// once its line appears every earlier hook has finished.
func sentinelHook(trace string) HookSpec {
	return HookSpec{On: []string{"sentinel"}, Command: []string{"sh", "-c", "echo sentinel >> " + trace}}
}

func TestHooksFireOnlyForMatchingEvents(t *testing.T) {
	tests := []struct {
		name   string
		on     [][]string // one hook per entry, tagged h0, h1, ...
		events []string
		want   []string
	}{
		{"single match", [][]string{{"up"}}, []string{"up"}, []string{"h0 up"}},
		{"no match", [][]string{{"down"}}, []string{"up", "addr-change"}, nil},
		{"several events", [][]string{{"addr-change", "down", "up"}}, []string{"link-up", "addr-change", "probe-down", "down"}, []string{"h0 addr-change", "h0 down"}},
		{"hooks in config order", [][]string{{"up"}, {"down"}, {"up", "down"}}, []string{"up", "down"}, []string{"h0 up", "h2 up", "h1 down", "h2 down"}},
		{"case sensitive", [][]string{{"UP"}}, []string{"up"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			trace := filepath.Join(dir, "trace")
			var hooks []HookSpec
			for i, on := range tt.on {
				hooks = append(hooks, HookSpec{On: on, Command: []string{
					testutil.Script(t, dir, fmt.Sprintf("h%d", i), fmt.Sprintf(`echo "h%d $UPLINKD_EVENT" >> %s`, i, trace))}})
			}
			hooks = append(hooks, sentinelHook(trace))
			r := NewRunner(quiet())
			defer r.Close()
			for _, ev := range append(tt.events, "sentinel") {
				r.Fire(hooks, HookEvent{Event: ev, Uplink: "u"})
			}
			testutil.WaitFor(t, "sentinel", 5*time.Second, func() bool { return strings.Contains(testutil.ReadFile(t, trace), "sentinel") })
			got := testutil.Lines(t, trace)
			if got = got[:len(got)-1]; !slices.Equal(got, tt.want) {
				t.Fatalf("ran %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHookEnvOrderAndLogs(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	pwned := filepath.Join(dir, "pwned")
	cmd := testutil.Script(t, dir, "notify", `sleep 0.02; echo "$UPLINKD_EVENT|$UPLINKD_UPLINK|$UPLINKD_IFACE|$UPLINKD_OLD_IP|$UPLINKD_NEW_IP|$UPLINKD_REASON|$1" >> `+trace+`; echo "said $UPLINKD_EVENT"`)
	hooks := []HookSpec{{On: []string{"down", "up", "addr-change"}, Command: []string{cmd, "$(touch " + pwned + ")"}}, sentinelHook(trace)}
	log, logs := testutil.NewCapture()
	r := NewRunner(log)
	defer r.Close()
	events := []HookEvent{
		{Event: "down", Uplink: "dsl", Iface: "ppp0", OldIP: "198.51.100.7", Reason: "carrier lost"},
		{Event: "up", Uplink: "dsl", Iface: "ppp0", NewIP: "198.51.100.9", Reason: "probes ok"},
		{Event: "addr-change", Uplink: "dsl", Iface: "ppp0", OldIP: "198.51.100.9", NewIP: "203.0.113.5"},
		{Event: "sentinel", Uplink: "dsl"},
	}
	for _, ev := range events {
		r.Fire(hooks, ev)
	}
	testutil.WaitFor(t, "sentinel", 5*time.Second, func() bool { return strings.Contains(testutil.ReadFile(t, trace), "sentinel") })
	lit := "$(touch " + pwned + ")"
	want := []string{
		"down|dsl|ppp0|198.51.100.7||carrier lost|" + lit,
		"up|dsl|ppp0||198.51.100.9|probes ok|" + lit,
		"addr-change|dsl|ppp0|198.51.100.9|203.0.113.5||" + lit,
		"sentinel",
	}
	if got := testutil.Lines(t, trace); !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("an argument was interpreted by a shell")
	}
	testutil.WaitFor(t, "hook records", 5*time.Second, func() bool {
		return len(logs.Find(t, "hook finished", map[string]any{"uplink": "dsl"})) == 4
	})
	out := logs.Find(t, "command output", map[string]any{"event": "up", "uplink": "dsl", "iface": "ppp0", "hook": cmd, "stream": "stdout", "line": "said up"})
	fin := logs.Find(t, "hook finished", map[string]any{"event": "addr-change", "result": "ok", "exit_code": 0.0, "old_ip": "198.51.100.9", "new_ip": "203.0.113.5"})
	if len(out) != 1 || len(fin) != 1 {
		t.Fatalf("log records missing: %v", logs.Records(t))
	}
}

// blocker is a hook that records its start and waits until release exists.
func blocker(t *testing.T, dir string) (hook HookSpec, trace, release string) {
	trace, release = filepath.Join(dir, "trace"), filepath.Join(dir, "release")
	cmd := testutil.Script(t, dir, "block", fmt.Sprintf(`echo "$UPLINKD_REASON" >> %s
while [ ! -e %s ]; do sleep 0.02; done`, trace, release))
	return HookSpec{On: []string{"down"}, Command: []string{cmd}, Timeout: 10 * time.Second}, trace, release
}

func TestFireDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	hook, trace, release := blocker(t, dir)
	r := NewRunner(quiet())
	// The hooks cannot finish before release exists: if Fire waited for
	// them, the 20 calls would never return.
	fired := make(chan struct{})
	go func() {
		defer close(fired)
		for i := range 20 {
			r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Reason: fmt.Sprint(i)})
		}
	}()
	select {
	case <-fired:
	case <-time.After(20 * time.Second):
		os.WriteFile(release, nil, 0o644)
		t.Fatal("Fire blocked while a hook ran")
	}
	// Another uplink is not held up by the blocked one.
	other := filepath.Join(dir, "other")
	r.Fire([]HookSpec{{On: []string{"up"}, Command: []string{"sh", "-c", "echo ran > " + other}}}, HookEvent{Event: "up", Uplink: "v"})
	testutil.WaitFor(t, "other uplink's hook", 5*time.Second, func() bool { return testutil.ReadFile(t, other) != "" })
	testutil.WaitFor(t, "first hook", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 1 })
	os.WriteFile(release, nil, 0o644)
	testutil.WaitFor(t, "all hooks", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 20 })
	r.Close()
	want := make([]string, 20)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	if got := testutil.Lines(t, trace); !slices.Equal(got, want) {
		t.Fatalf("order %q", got)
	}
}

func TestFullQueueCoalescesAndDrops(t *testing.T) {
	type fired struct{ event, reason string }
	tests := []struct {
		name      string
		fire      []fired // after event "down/0" is running; queue size 2
		want      []string
		coalesced float64
		dropped   float64
	}{
		{"fits", []fired{{"down", "1"}, {"down", "2"}}, []string{"down/0", "down/1", "down/2"}, 0, 0},
		{"same kind coalesces into the newest", []fired{{"down", "1"}, {"down", "2"}, {"down", "3"}, {"down", "4"}, {"down", "5"}},
			[]string{"down/0", "down/1", "down/5"}, 3, 0},
		{"other kind drops the oldest", []fired{{"down", "1"}, {"up", "2"}, {"down", "3"}, {"up", "4"}},
			[]string{"down/0", "down/3", "up/4"}, 0, 2},
		{"mixed", []fired{{"down", "1"}, {"up", "2"}, {"up", "3"}, {"down", "4"}},
			[]string{"down/0", "up/3", "down/4"}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			trace, release := filepath.Join(dir, "trace"), filepath.Join(dir, "release")
			cmd := testutil.Script(t, dir, "block", fmt.Sprintf(`echo "$UPLINKD_EVENT/$UPLINKD_REASON" >> %s
while [ ! -e %s ]; do sleep 0.02; done`, trace, release))
			hook := HookSpec{On: []string{"down", "up"}, Command: []string{cmd}, Timeout: 10 * time.Second}
			log, logs := testutil.NewCapture()
			r := newRunner(log, 2)
			defer r.Close()
			r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Reason: "0"})
			testutil.WaitFor(t, "hook 0 running", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 1 })
			for _, f := range tt.fire {
				r.Fire([]HookSpec{hook}, HookEvent{Event: f.event, Uplink: "u", Reason: f.reason})
			}
			os.WriteFile(release, nil, 0o644)
			testutil.WaitFor(t, "queued hooks", 20*time.Second, func() bool { return len(testutil.Lines(t, trace)) >= len(tt.want) })
			// Nothing else may run: a sentinel fired now runs after
			// anything still queued.
			r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Reason: "sentinel"})
			testutil.WaitFor(t, "sentinel", 20*time.Second, func() bool { return strings.Contains(testutil.ReadFile(t, trace), "down/sentinel") })
			if got := testutil.Lines(t, trace); !slices.Equal(got, append(slices.Clone(tt.want), "down/sentinel")) {
				t.Fatalf("ran %q, want %q", got, tt.want)
			}
			recs := logs.Find(t, "hook events skipped: hooks too slow, queue full", map[string]any{"uplink": "u", "level": "WARN"})
			if tt.coalesced+tt.dropped == 0 {
				if len(recs) != 0 {
					t.Fatalf("unexpected skip records %v", recs)
				}
				return
			}
			if len(recs) != 1 || recs[0]["coalesced"] != tt.coalesced || recs[0]["dropped"] != tt.dropped {
				t.Fatalf("skip records %v, want coalesced=%v dropped=%v", recs, tt.coalesced, tt.dropped)
			}
		})
	}
}

// TestSlowHookHundredEvents: a hook far slower than the event rate sees the
// last state, the queue never grows beyond its bound, and every skipped
// event is accounted for in the log.
func TestSlowHookHundredEvents(t *testing.T) {
	defer noLeaks(t)
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	cmd := testutil.Script(t, dir, "slow", `echo "$UPLINKD_EVENT/$UPLINKD_NEW_IP" >> `+trace+`; sleep 0.05`)
	hook := HookSpec{On: []string{"addr-change", "down", "up"}, Command: []string{cmd}}
	log, logs := testutil.NewCapture()
	const size = 4
	r := newRunner(log, size)
	kinds := []string{"addr-change", "addr-change", "down", "up"}
	for i := range 100 {
		r.Fire([]HookSpec{hook}, HookEvent{Event: kinds[i%len(kinds)], Uplink: "u", NewIP: fmt.Sprintf("198.51.100.%d", i)})
		r.mu.Lock()
		n := len(r.queues["u"].items)
		r.mu.Unlock()
		if n > size {
			t.Fatalf("queue holds %d events, bound is %d", n, size)
		}
	}
	last := "up/198.51.100.99"
	testutil.WaitFor(t, "last state", 10*time.Second, func() bool { return strings.Contains(testutil.ReadFile(t, trace), last) })
	r.Close()
	got := testutil.Lines(t, trace)
	if got[len(got)-1] != last {
		t.Fatalf("last delivered %q, want %q", got[len(got)-1], last)
	}
	skipped := 0.0
	for _, rec := range logs.Find(t, "hook events skipped: hooks too slow, queue full", map[string]any{"uplink": "u"}) {
		skipped += rec["coalesced"].(float64) + rec["dropped"].(float64)
	}
	if int(skipped)+len(got) != 100 {
		t.Fatalf("%d delivered + %v logged as skipped != 100", len(got), skipped)
	}
}

func TestRunnerClose(t *testing.T) {
	dir := t.TempDir()
	hook, trace, release := blocker(t, dir)
	log, logs := testutil.NewCapture()
	r := NewRunner(log)
	for i := range 3 {
		r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Reason: fmt.Sprint(i)})
	}
	testutil.WaitFor(t, "hook 0 running", 5*time.Second, func() bool { return len(testutil.Lines(t, trace)) == 1 })
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close did not wait for the running hook")
	case <-time.After(100 * time.Millisecond):
	}
	os.WriteFile(release, nil, 0o644)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	if got := testutil.Lines(t, trace); !slices.Equal(got, []string{"0"}) {
		t.Fatalf("queued hooks ran after Close: %q", got)
	}
	if d := logs.Find(t, "hooks not run: shutting down", map[string]any{"uplink": "u", "dropped": 2.0}); len(d) != 1 {
		t.Fatalf("no drop record: %v", logs.Records(t))
	}
	r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u"}) // must not panic
	r.Close()                                                       // idempotent
}

func TestHookTimeout(t *testing.T) {
	dir := t.TempDir()
	log, logs := testutil.NewCapture()
	r := NewRunner(log)
	r.Fire([]HookSpec{{On: []string{"up"}, Command: []string{testutil.Script(t, dir, "hang", "exec sleep 60")}, Timeout: 200 * time.Millisecond}},
		HookEvent{Event: "up", Uplink: "u"})
	testutil.WaitFor(t, "timeout record", 5*time.Second, func() bool {
		return len(logs.Find(t, "hook finished", map[string]any{"result": "timeout", "level": "WARN"})) == 1
	})
	r.Close()
}

// TestHookTimeoutKillsGroup: at its timeout the hook is killed together with
// everything it started (its process group), while the uplink's later
// events are still delivered.
func TestHookTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pids, trace := filepath.Join(dir, "pids"), filepath.Join(dir, "trace")
	hang := testutil.Script(t, dir, "hang", `sleep 60 & echo $! >> `+pids+`; echo $$ >> `+pids+`; wait`)
	log, logs := testutil.NewCapture()
	r := NewRunner(log)
	defer r.Close()
	r.Fire([]HookSpec{{On: []string{"up"}, Command: []string{hang}, Timeout: 300 * time.Millisecond}}, HookEvent{Event: "up", Uplink: "u"})
	r.Fire([]HookSpec{{On: []string{"down"}, Command: []string{"sh", "-c", "echo next >> " + trace}}}, HookEvent{Event: "down", Uplink: "u"})
	testutil.WaitFor(t, "hook started", 5*time.Second, func() bool { return len(testutil.Lines(t, pids)) == 2 })
	testutil.WaitFor(t, "next event", 5*time.Second, func() bool { return testutil.ReadFile(t, trace) != "" })
	if len(logs.Find(t, "hook finished", map[string]any{"result": "timeout", "event": "up"})) != 1 {
		t.Fatalf("no timeout record: %v", logs.Records(t))
	}
	for _, l := range testutil.Lines(t, pids) {
		pid, _ := strconv.Atoi(l)
		testutil.WaitFor(t, "pid "+l+" gone", 5*time.Second, func() bool { return !alive(pid) })
	}
}

func TestReconnectOnAttemptEvent(t *testing.T) {
	dir := t.TempDir()
	rc := NewReconnector(ReconnectSpec{Uplink: "dsl", Iface: "ppp0", Kind: "ppp",
		Command: []string{testutil.Script(t, dir, "fail", "exit 3")}, Backoff: time.Hour}, quiet(), NewFakeClock(time.Time{}), nil)
	got := make(chan HookEvent, 1)
	rc.OnAttempt(func(ev HookEvent) { got <- ev })
	rc.Down(true)
	select {
	case ev := <-got:
		if ev.Event != "reconnect" || ev.Uplink != "dsl" || ev.Iface != "ppp0" || ev.Result != "failed" || ev.Attempt != 1 || ev.Reason == "" {
			t.Fatalf("event %+v", ev)
		}
		if env := strings.Join(ev.env(), " "); !strings.Contains(env, "UPLINKD_RESULT=failed") || !strings.Contains(env, "UPLINKD_ATTEMPT=1") {
			t.Fatalf("env %s", env)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reconnect event")
	}
	rc.Close()
}
