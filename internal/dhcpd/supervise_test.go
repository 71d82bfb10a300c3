package dhcpd

import (
	"context"
	"fmt"
	"log/slog"
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

// waitLong bounds every wait in these tests: generous, so that a busy
// machine only makes them slower, never failing.
const waitLong = 20 * time.Second

// startSupervised runs a mode-service server whose restart action is
// replaced by a recorder (when restart is set) and whose supervisor reports
// to r each time it is about to wait.
func startSupervised(t *testing.T, svc Service, r *recorder, restart func(ctx context.Context, start bool) error) *Server {
	t.Helper()
	s, err := New(Spec{Mode: ModeService, Interface: "lan0", Service: svc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if restart != nil {
		s.sup.restart = restart
	}
	if r != nil {
		s.sup.idle = r.idle
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLong):
			t.Error("Run did not return")
		}
	})
	return s
}

// recorder records the supervisor's actions and its state each time it
// waits.
type recorder struct {
	mu    sync.Mutex
	calls []bool // start flags
	at    []time.Time
	// From the supervisor's last idle report: wake-ups handled, whether an
	// action was due, and how many actions had run by then.
	wakes, callsAtIdle int
	due                bool
}

func (r *recorder) restart(_ context.Context, start bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, start)
	r.at = append(r.at, time.Now())
	return nil
}

func (r *recorder) idle(wakes int, due bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wakes, r.due, r.callsAtIdle = wakes, due, len(r.calls)
}

// waitFor polls the recorder until cond holds (under its lock).
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		r.mu.Lock()
		ok := cond()
		calls, wakes, due := append([]bool(nil), r.calls...), r.wakes, r.due
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: actions %v, %d wake-ups handled, action due %v", what, calls, wakes, due)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *recorder) got() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.calls...)
}

func TestSupervisorWhenToRestart(t *testing.T) {
	tests := []struct {
		name   string
		svc    Service
		events []bool
		want   []bool // start flag of each action
	}{
		{name: "unit: first up starts it if needed", svc: Service{Unit: "x.service"}, events: []bool{true}, want: []bool{true}},
		{name: "command: first up runs nothing", svc: Service{Command: []string{"true"}}, events: []bool{true}, want: nil},
		{name: "down then up restarts", svc: Service{Command: []string{"true"}}, events: []bool{false, true}, want: []bool{false}},
		{name: "up, down, up: start then restart", svc: Service{Unit: "x.service", MinInterval: time.Millisecond}, events: []bool{true, false, true}, want: []bool{true, false}},
		{name: "down only", svc: Service{Command: []string{"true"}}, events: []bool{false}, want: nil},
		{name: "repeated up is no flap", svc: Service{Command: []string{"true"}}, events: []bool{false, true, true, true}, want: []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r recorder
			s := startSupervised(t, tt.svc, &r, r.restart)
			for i, up := range tt.events {
				s.LinkChanged(up)
				// Each event is seen on its own: the next is sent only
				// once the supervisor has handled this one.
				r.waitFor(t, fmt.Sprintf("event %d handled", i+1), func() bool { return r.wakes == i+1 })
			}
			// Every event handled and no action due: nothing more can run.
			r.waitFor(t, "no action due", func() bool { return r.wakes == len(tt.events) && !r.due })
			if got := r.got(); !slices.Equal(got, tt.want) {
				t.Fatalf("actions %v, want %v", got, tt.want)
			}
		})
	}
}

// A flapping link gets one restart at once and one more when MinInterval
// has passed, not one per flap; LinkChanged never waits for a restart.
func TestSupervisorRateLimit(t *testing.T) {
	const interval = time.Second
	var r recorder
	release := make(chan struct{})
	var held, released sync.Once
	// The first restart is a slow unit restart: it lasts until the test
	// has flapped the link ten times.
	slow := func(ctx context.Context, start bool) error {
		err := r.restart(ctx, start)
		held.Do(func() { <-release })
		return err
	}
	s := startSupervised(t, Service{Command: []string{"true"}, MinInterval: interval}, &r, slow)
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // before Run is stopped
	s.LinkChanged(false)
	r.waitFor(t, "down handled", func() bool { return r.wakes == 1 })
	s.LinkChanged(true)
	r.waitFor(t, "the first restart", func() bool { return len(r.calls) == 1 })

	// Ten flaps while that restart runs: if LinkChanged waited for it,
	// they would never finish.
	flapped := make(chan struct{})
	go func() {
		defer close(flapped)
		for range 10 {
			s.LinkChanged(false)
			s.LinkChanged(true)
		}
	}()
	select {
	case <-flapped:
	case <-time.After(waitLong):
		t.Fatal("LinkChanged blocked while a restart ran")
	}
	released.Do(func() { close(release) })

	// One more restart for all ten flaps, then nothing is due.
	r.waitFor(t, "the second restart, then nothing due", func() bool { return r.callsAtIdle == 2 && !r.due })
	got := r.got()
	if len(got) != 2 {
		t.Fatalf("%d restarts for 10 flaps, want 2 (one now, one after the interval)", len(got))
	}
	// Without the rate limit the second restart would follow the first
	// as soon as it was released (a few ms); the supervisor sets the
	// interval's start just before calling restart, hence the slack.
	if gap := r.at[1].Sub(r.at[0]); gap < interval/2 {
		t.Errorf("second restart %s after the first, want about MinInterval (%s)", gap, interval)
	}
	if st := s.Status(); st.Restarts != 2 {
		t.Errorf("status restarts %d", st.Restarts)
	}
}

// The configured command really runs, as argv without a shell, with the
// interface in its environment; a failing command shows in status.
func TestSupervisorRunsCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	s := startSupervised(t, Service{Command: []string{"/bin/sh", "-c", `echo "$UPLINKD_IFACE $UPLINKD_EVENT" > "$0"`, out}}, nil, nil)
	s.LinkChanged(false)
	s.LinkChanged(true)
	deadline := time.Now().Add(waitLong)
	for {
		b, _ := os.ReadFile(out)
		if strings.TrimSpace(string(b)) == "lan0 lan-up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command output %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	f := startSupervised(t, Service{Command: []string{"/bin/false"}}, nil, nil)
	f.LinkChanged(false)
	f.LinkChanged(true)
	deadline = time.Now().Add(waitLong)
	for f.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("failed command not in status")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := f.Status(); st.Restarts != 0 {
		t.Errorf("failed restart counted: %+v", st)
	}
}

// TestRestartUnitRunsSystemctl: a unit is started or restarted with
// `systemctl start|restart -- UNIT` (a fake systemctl on PATH records the
// calls), and a failed job is an error that carries systemctl's message.
func TestRestartUnitRunsSystemctl(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >>" + calls + "\n" +
		"[ \"$3\" = broken.service ] && { echo \"Job for broken.service failed.\" >&2; exit 1; }\nexit 0\n"
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	for _, tt := range []struct {
		unit  string
		start bool
		want  string // the call recorded
		err   string // "" for success
	}{
		{"isc-dhcp-server.service", true, "start -- isc-dhcp-server.service", ""},
		{"isc-dhcp-server.service", false, "restart -- isc-dhcp-server.service", ""},
		{"broken.service", false, "restart -- broken.service", "restart broken.service: exit status 1: Job for broken.service failed."},
	} {
		os.Remove(calls)
		s := &supervisor{svc: Service{Unit: tt.unit}, log: slog.New(slog.DiscardHandler)}
		err := s.restartUnit(context.Background(), tt.start)
		if got := fmt.Sprint(err); (tt.err == "" && err != nil) || (tt.err != "" && got != tt.err) {
			t.Errorf("%s start=%v: error %v, want %q", tt.unit, tt.start, err, tt.err)
		}
		b, _ := os.ReadFile(calls)
		if strings.TrimSpace(string(b)) != tt.want {
			t.Errorf("%s start=%v: systemctl called with %q, want %q", tt.unit, tt.start, b, tt.want)
		}
	}
}

// TestRunCommandKillsWhatItForked: a restart command that is cancelled (the
// daemon stops, or the restart times out) is killed with everything it
// forked, as every program uplinkd runs is: the command gets its own process
// group. Before, only the command itself was killed, and its output pipe,
// still held by what it forked, kept the restart waiting.
func TestRunCommandKillsWhatItForked(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := testutil.Script(t, dir, "restart-dhcp",
		"sleep 1000 &\necho $! >"+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"\nwait")
	s := &supervisor{svc: Service{Command: []string{script}}, iface: "lan0", log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.runCommand(ctx, false) }()

	testutil.WaitFor(t, "the command's child", waitLong, func() bool { return testutil.ReadFile(t, pidFile) != "" })
	pid, err := strconv.Atoi(strings.TrimSpace(testutil.ReadFile(t, pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Errorf("cancelled command: error %v, want one that says canceled", err)
		}
	case <-time.After(waitLong):
		t.Fatal("runCommand did not return after its context was cancelled")
	}
	// The child, reparented once its shell died, must go too (a zombie
	// waiting for its new parent to reap it counts as gone).
	testutil.WaitFor(t, fmt.Sprintf("the command's child %d to be killed", pid), waitLong, func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		_, after, _ := strings.Cut(string(stat), ") ")
		return strings.HasPrefix(after, "Z")
	})
}
