package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
