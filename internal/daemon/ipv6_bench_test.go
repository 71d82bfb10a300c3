package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// BenchmarkDualStackRedial measures, on dual-stack ppp uplinks (ipv6 on,
// the lab's IPv6: every dial brings a new global /64 address besides the
// new IPv4 one), the redial event → applied time of both families in the
// same run, so that the IPv6 figure is compared with the IPv4 one under
// the same load:
//   - v4-event: the IPv4 address's netlink event read → end of the pass
//     that installed its from-rule and rewrote the SNAT rule (the figure
//     BenchmarkRedialToApplied calls dial-event);
//   - v6-event: the IPv6 address's event read → end of the pass that
//     installed its from-rule (the IPv6 default in the uplink's table and
//     uplinkd's IPv6 default come with it);
//   - ratio-p50 and ratio-p99: v6 over v4 (issue 18: within 1.2).
//
// Run: go test -run '^$' -bench DualStackRedial -benchtime 1x ./internal/daemon
func BenchmarkDualStackRedial(b *testing.B) {
	l := benchLab6(b, 2)
	syncs := make(chan SyncResult, 4096)
	stop := benchDaemon(b, l, writeBenchConfig6(b, 2, "nftables", true), func(s SyncResult) { syncs <- s })
	defer stop()
	waitFor(b, syncs, func(s SyncResult) bool { return hasActive(s, "ppp1") })

	var v4, v6 []time.Duration
	b.ResetTimer()
	for range b.N {
		for range redials {
			res := dropAndDial(b, l, syncs, "ppp1")
			new4, new6 := res.New.String(), l.UplinkAddr6("ppp1").String()
			// The two addresses come as two events, IPv6 first (the lab's
			// dial); one pass or two may apply them.
			var got4, got6 bool
			waitFor(b, syncs, func(s SyncResult) bool {
				if !got6 && addsRuleFrom(s, new6) {
					got6, v6 = true, append(v6, s.End.Sub(s.Trigger))
				}
				if !got4 && addsRuleFrom(s, new4) && s.FirewallChanged {
					got4, v4 = true, append(v4, s.End.Sub(s.Trigger))
				}
				return got4 && got6
			})
		}
	}
	b.StopTimer()
	report(b, "v4-event", v4)
	report(b, "v6-event", v6)
	b.ReportMetric(quantile(v6, 0.5)/quantile(v4, 0.5), "ratio-p50")
	b.ReportMetric(quantile(v6, 0.99)/quantile(v4, 0.99), "ratio-p99")
}

// dropAndDial drops uplink name's link, waits for the pass that took it out
// of the default, and dials it again.
func dropAndDial(b *testing.B, l *lab.Lab, syncs <-chan SyncResult, name string) lab.RedialResult {
	b.Helper()
	if _, err := l.DropLink(name); err != nil {
		b.Fatal(err)
	}
	waitFor(b, syncs, func(s SyncResult) bool { return !hasActive(s, name) && len(s.Changes) > 0 })
	res, err := l.Dial(name)
	if err != nil {
		b.Fatal(err)
	}
	return res
}

// quantile is the q quantile of ds in µs.
func quantile(ds []time.Duration, q float64) float64 {
	vals := make([]float64, len(ds))
	for i, d := range ds {
		vals[i] = float64(d.Microseconds())
	}
	return quantileOf(vals, q)
}

// benchLabFor is benchLab, or benchLab6 when ipv6 is set.
func benchLabFor(b *testing.B, n int, ipv6 bool) *lab.Lab {
	if ipv6 {
		return benchLab6(b, n)
	}
	return benchLab(b, n)
}

// benchLab6 is benchLab with IPv6 on every uplink.
func benchLab6(b *testing.B, n int) *lab.Lab {
	spec := lab.Spec{IPv6: true}
	for i := range n {
		spec.Uplinks = append(spec.Uplinks, lab.UplinkSpec{Name: fmt.Sprintf("ppp%d", i), Kind: lab.KindPPP})
	}
	return lab.NewT(b, spec)
}

// writeBenchConfig6 is writeBenchConfig with ipv6 = true on every uplink
// when ipv6 is set.
func writeBenchConfig6(b *testing.B, n int, backend string, ipv6 bool) string {
	p := writeBenchConfig(b, n, backend)
	if !ipv6 {
		return p
	}
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "kind = \"ppp\"\n", "kind = \"ppp\"\nipv6 = true\n")
	p = filepath.Join(b.TempDir(), "bench6.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}
