package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
					script(t, dir, fmt.Sprintf("h%d", i), fmt.Sprintf(`echo "h%d $UPLINKD_EVENT" >> %s`, i, trace))}})
			}
			hooks = append(hooks, sentinelHook(trace))
			r := NewRunner(quiet())
			defer r.Close()
			for _, ev := range append(tt.events, "sentinel") {
				r.Fire(hooks, HookEvent{Event: ev, Uplink: "u"})
			}
			waitFor(t, "sentinel", 5*time.Second, func() bool { return strings.Contains(readFile(t, trace), "sentinel") })
			got := lines(t, trace)
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
	cmd := script(t, dir, "notify", `sleep 0.02; echo "$UPLINKD_EVENT|$UPLINKD_UPLINK|$UPLINKD_IFACE|$UPLINKD_OLD_IP|$UPLINKD_NEW_IP|$UPLINKD_REASON|$1" >> `+trace+`; echo "said $UPLINKD_EVENT"`)
	hooks := []HookSpec{{On: []string{"down", "up", "addr-change"}, Command: []string{cmd, "$(touch " + pwned + ")"}}, sentinelHook(trace)}
	log, logs := newCapture()
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
	waitFor(t, "sentinel", 5*time.Second, func() bool { return strings.Contains(readFile(t, trace), "sentinel") })
	lit := "$(touch " + pwned + ")"
	want := []string{
		"down|dsl|ppp0|198.51.100.7||carrier lost|" + lit,
		"up|dsl|ppp0||198.51.100.9|probes ok|" + lit,
		"addr-change|dsl|ppp0|198.51.100.9|203.0.113.5||" + lit,
		"sentinel",
	}
	if got := lines(t, trace); !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("an argument was interpreted by a shell")
	}
	waitFor(t, "hook records", 5*time.Second, func() bool {
		return len(logs.find(t, "hook finished", map[string]any{"uplink": "dsl"})) == 4
	})
	out := logs.find(t, "command output", map[string]any{"event": "up", "uplink": "dsl", "iface": "ppp0", "hook": cmd, "stream": "stdout", "line": "said up"})
	fin := logs.find(t, "hook finished", map[string]any{"event": "addr-change", "result": "ok", "exit_code": 0.0, "old_ip": "198.51.100.9", "new_ip": "203.0.113.5"})
	if len(out) != 1 || len(fin) != 1 {
		t.Fatalf("log records missing: %v", logs.records(t))
	}
}

// blocker is a hook that records its start and waits until release exists.
func blocker(t *testing.T, dir string) (hook HookSpec, trace, release string) {
	trace, release = filepath.Join(dir, "trace"), filepath.Join(dir, "release")
	cmd := script(t, dir, "block", fmt.Sprintf(`echo "$UPLINKD_REASON" >> %s
while [ ! -e %s ]; do sleep 0.02; done`, trace, release))
	return HookSpec{On: []string{"down"}, Command: []string{cmd}, Timeout: 10 * time.Second}, trace, release
}

func TestFireDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	hook, trace, release := blocker(t, dir)
	r := NewRunner(quiet())
	start := time.Now()
	for i := range 20 {
		r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Reason: fmt.Sprint(i)})
	}
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Fatalf("Fire blocked for %v", el)
	}
	// Another uplink is not held up by the blocked one.
	other := filepath.Join(dir, "other")
	r.Fire([]HookSpec{{On: []string{"up"}, Command: []string{"sh", "-c", "echo ran > " + other}}}, HookEvent{Event: "up", Uplink: "v"})
	waitFor(t, "other uplink's hook", 5*time.Second, func() bool { return readFile(t, other) != "" })
	waitFor(t, "first hook", 5*time.Second, func() bool { return len(lines(t, trace)) == 1 })
	os.WriteFile(release, nil, 0o644)
	waitFor(t, "all hooks", 5*time.Second, func() bool { return len(lines(t, trace)) == 20 })
	r.Close()
	want := make([]string, 20)
	for i := range want {
		want[i] = fmt.Sprint(i)
	}
	if got := lines(t, trace); !slices.Equal(got, want) {
		t.Fatalf("order %q", got)
	}
}

func TestFullQueueDrops(t *testing.T) {
	dir := t.TempDir()
	hook, trace, release := blocker(t, dir)
	log, logs := newCapture()
	r := newRunner(log, 2)
	defer r.Close()
	fire := func(i int) {
		r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Iface: "ppp0", Reason: fmt.Sprint(i)})
	}

	fire(0)
	// Wait until hook 0 runs, so it no longer occupies the queue.
	waitFor(t, "hook 0 running", 5*time.Second, func() bool { return len(lines(t, trace)) == 1 })
	for i := 1; i <= 5; i++ {
		fire(i) // 1 and 2 fit in the queue, 3..5 are dropped
	}
	drops := logs.find(t, "hook queue full, hook dropped", map[string]any{"event": "down", "uplink": "u", "iface": "ppp0", "hook": hook.Command[0], "level": "WARN"})
	if len(drops) != 3 {
		t.Fatalf("%d drop records, want 3: %v", len(drops), logs.records(t))
	}
	os.WriteFile(release, nil, 0o644)
	waitFor(t, "queued hooks", 5*time.Second, func() bool { return len(lines(t, trace)) == 3 })
	time.Sleep(100 * time.Millisecond) // nothing else may run
	if got := lines(t, trace); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Fatalf("ran %q", got)
	}
}

func TestRunnerClose(t *testing.T) {
	dir := t.TempDir()
	hook, trace, release := blocker(t, dir)
	log, logs := newCapture()
	r := NewRunner(log)
	for i := range 3 {
		r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u", Reason: fmt.Sprint(i)})
	}
	waitFor(t, "hook 0 running", 5*time.Second, func() bool { return len(lines(t, trace)) == 1 })
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
	if got := lines(t, trace); !slices.Equal(got, []string{"0"}) {
		t.Fatalf("queued hooks ran after Close: %q", got)
	}
	if d := logs.find(t, "hooks not run: shutting down", map[string]any{"uplink": "u", "dropped": 2.0}); len(d) != 1 {
		t.Fatalf("no drop record: %v", logs.records(t))
	}
	r.Fire([]HookSpec{hook}, HookEvent{Event: "down", Uplink: "u"}) // must not panic
	r.Close()                                                       // idempotent
}

func TestHookTimeout(t *testing.T) {
	dir := t.TempDir()
	log, logs := newCapture()
	r := NewRunner(log)
	r.Fire([]HookSpec{{On: []string{"up"}, Command: []string{script(t, dir, "hang", "exec sleep 60")}, Timeout: 200 * time.Millisecond}},
		HookEvent{Event: "up", Uplink: "u"})
	waitFor(t, "timeout record", 5*time.Second, func() bool {
		return len(logs.find(t, "hook finished", map[string]any{"result": "timeout", "level": "WARN"})) == 1
	})
	r.Close()
}
