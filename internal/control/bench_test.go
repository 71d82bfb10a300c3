package control

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// benchCalls times b.N calls of req against a fake daemon on a real socket
// and reports p50 and p99 besides the mean.
func benchCalls(b *testing.B, req Request) {
	path, _ := serveT(b, Options{Path: b.TempDir() + "/uplinkd.sock"}, &fakeHandler{})
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := Call(ctx, path, req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}

// BenchmarkEventRoundTrip: connect, send an interface event, get the
// daemon's answer (the part of `uplinkd event` after process start).
func BenchmarkEventRoundTrip(b *testing.B) {
	ev := Event{Iface: "ppp0", State: LinkUp, Local: netip.MustParseAddr("203.0.113.9"), Remote: netip.MustParseAddr("198.51.100.1")}
	benchCalls(b, Request{Cmd: CmdEvent, Event: &ev})
}

// BenchmarkStatus: a status request with two uplinks, answered in full.
func BenchmarkStatus(b *testing.B) {
	benchCalls(b, Request{Cmd: CmdStatus})
}
