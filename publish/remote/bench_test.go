package remote

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/publish"
)

// BenchmarkPublishLatency measures, with settle = 0 (the configured settle
// only adds its own duration), the time from Update with a new address to
//
//   - dyndns2: the HTTPS request arriving at the server (received-*), and the
//     attempt's result reaching OnResult (done-*), over loopback with a fresh
//     TLS connection each time (as after a real address change);
//   - rfc2136: the signed UPDATE acknowledged by a real knotd (done-*), which
//     bounds "received by the server" from above.
//
// Reported as p50/p99 in milliseconds. Run:
//
//	go test -run '^$' -bench PublishLatency -benchtime 200x ./hooks/
func BenchmarkPublishLatency(b *testing.B) {
	addrs := []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11")}
	run := func(b *testing.B, spec publish.Spec, received <-chan dynRequest) {
		spec.Settle, spec.MinInterval, spec.Refresh = 0, 0, 0
		done := make(chan publish.Event, 1)
		m, err := publish.NewManager([]publish.Spec{spec}, publish.Options{StateDir: b.TempDir(), Log: quiet(),
			OnResult: func(ev publish.Event) { done <- ev }})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		var recv, fin []time.Duration
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			m.Update(spec.Uplink, addrs[i%2])
			if received != nil {
				<-received
				recv = append(recv, time.Since(start))
			}
			ev := <-done
			fin = append(fin, time.Since(start))
			if ev.Result != "ok" {
				b.Fatalf("publish: %+v", ev)
			}
		}
		b.StopTimer()
		report(b, "received", recv)
		report(b, "done", fin)
	}
	b.Run("dyndns2", func(b *testing.B) {
		ca := newTestCA(b)
		dir := b.TempDir()
		srv := newDynServer(b, ca)
		srv.received = make(chan dynRequest, 1)
		run(b, dynSpec(b, srv, dir, ca.file(b, dir, "ca.pem")), srv.received)
	})
	b.Run("rfc2136", func(b *testing.B) {
		k := startKnot(b)
		run(b, k.spec(), nil)
	})
}

func report(b *testing.B, what string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	pct := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), what+"-p50-ms")
	b.ReportMetric(pct(0.99), what+"-p99-ms")
}
