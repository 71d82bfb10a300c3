package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/control"
)

// runMainEnv makes the test binary act as the uplinkd command, so the
// benchmark below can time `uplinkd event` as a hook script runs it: a new
// process each time.
const runMainEnv = "UPLINKD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// BenchmarkEventCommand times `uplinkd event --iface ppp0 --state up ...`
// from exec to exit: with a daemon answering, with no daemon, and with a
// daemon that accepts but never answers (the 100 ms deadline is what ends it).
func BenchmarkEventCommand(b *testing.B) {
	dir := b.TempDir()
	up := filepath.Join(dir, "up.sock")
	hung := filepath.Join(dir, "hung.sock")
	ln, err := net.Listen("unix", hung)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	for _, bc := range []struct {
		name, socket string
		daemon       bool
	}{
		{"daemon", up, true},
		{"no-daemon", filepath.Join(dir, "none.sock"), false},
		{"daemon-hung", hung, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.daemon {
				serveBench(b, bc.socket)
			}
			lat := make([]time.Duration, 0, b.N)
			for range b.N {
				cmd := exec.Command(os.Args[0], "event", "--socket", bc.socket, "--iface", "ppp0", "--state", "up", "--local", "203.0.113.9", "--remote", "198.51.100.1")
				cmd.Env = append(os.Environ(), runMainEnv+"=1")
				t0 := time.Now()
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		})
	}
}

type nopHandler struct{ *ctlHandler }

func (nopHandler) Event(_ context.Context, _ control.Event) error { return nil }

func serveBench(b *testing.B, path string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, control.Options{Path: path, Group: -1}, nopHandler{&ctlHandler{}}) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	for range 1000 {
		if _, err := os.Lstat(path); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatal("control socket never appeared")
}

// eventRate runs n `uplinkd event --role master` calls at once (in this
// process, as sendEvent with its 90 ms budget and retries) against a
// control socket whose handler takes hold each. It returns how many calls
// exited 0 and how many events the daemon got, and fails t when a call
// reported success for an event the daemon did not get, or failed without
// saying so: a role change may fail under load, never silently.
func eventRate(t testing.TB, n int, hold time.Duration) (reported, delivered int) {
	h := &holdHandler{hold: hold}
	path := filepath.Join(t.TempDir(), "c.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, control.Options{Path: path, Group: -1}, h) }()
	defer func() {
		cancel()
		<-done
	}()
	for i := 0; ; i++ {
		if _, err := os.Lstat(path); err == nil {
			break
		}
		if i > 1000 {
			t.Fatal("control socket never appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var wg sync.WaitGroup
	var ok atomic.Int64
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			ev := control.Event{Role: control.RoleMaster}
			var eb bytes.Buffer
			code := sendEvent(socketTarget{path: path, from: "--socket"}, control.Request{Cmd: control.CmdEvent, Event: &ev}, &eb)
			switch {
			case code == 0 && eb.Len() == 0:
				ok.Add(1)
			case code == exitNotRunning && strings.HasPrefix(eb.String(), "uplinkd event: role master NOT delivered: ") && strings.Count(eb.String(), "\n") == 1:
			default:
				t.Errorf("exit %d with %q: neither delivered nor a clear failure", code, eb.String())
			}
		})
	}
	close(start)
	wg.Wait()
	reported, delivered = int(ok.Load()), int(h.n.Load())
	if reported > delivered {
		t.Errorf("%d role events reported delivered, the daemon got %d", reported, delivered)
	}
	return reported, delivered
}

type holdHandler struct {
	ctlHandler
	hold time.Duration
	n    atomic.Int64
}

func (h *holdHandler) Event(ctx context.Context, _ control.Event) error {
	select {
	case <-time.After(h.hold):
	case <-ctx.Done():
		return ctx.Err()
	}
	h.n.Add(1)
	return nil
}

// TestEventUnderLoad: 200 `event --role` calls at once on 16 slots, with a
// daemon that takes 1 ms per event. On a loaded 2-core machine not all
// make their 90 ms budget; each that does not says so and exits 3, none
// claims a delivery that did not happen. The share delivered is a figure
// for BenchmarkEventUnderLoad, not a pass/fail bound.
func TestEventUnderLoad(t *testing.T) {
	reported, delivered := eventRate(t, 200, time.Millisecond)
	// How many make the 90 ms budget depends on the machine's load (under
	// CPU hogs it can be none): a figure for BenchmarkEventUnderLoad. What
	// must hold on any machine is checked in eventRate: no call claims a
	// delivery the daemon did not get, and every other call says NOT
	// delivered.
	t.Logf("200 parallel role events: %d reported delivered, %d reached the daemon", reported, delivered)
}

// BenchmarkEventUnderLoad reports the share of 200 parallel role events
// delivered within the budget (exit 0), for a daemon taking 1 ms and 5 ms
// per event.
func BenchmarkEventUnderLoad(b *testing.B) {
	for _, hold := range []time.Duration{time.Millisecond, 5 * time.Millisecond} {
		b.Run(hold.String(), func(b *testing.B) {
			total, ok := 0, 0
			for range b.N {
				r, _ := eventRate(b, 200, hold)
				ok += r
				total += 200
			}
			b.ReportMetric(100*float64(ok)/float64(total), "%delivered")
		})
	}
}
