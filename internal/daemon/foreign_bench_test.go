package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BenchmarkForeignRoutes measures what routes uplinkd does not own cost it:
// with 0 and with 50,000 routes in a foreign table of the router namespace,
// the no-op pass (snapshot, compute, diff, firewall sync) and the redial
// latency (event → applied, 50 redials of ppp1). A pass that reads only the
// tables it decides on costs the same in both.
//
// Run: go test -run '^$' -bench ForeignRoutes -benchtime 1x ./internal/daemon
func BenchmarkForeignRoutes(b *testing.B) {
	for _, n := range []int{0, 50000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			l := benchLab(b, 2)
			if n > 0 {
				var sb strings.Builder
				for i := range n {
					fmt.Fprintf(&sb, "route add 10.%d.%d.0/24 dev lan0 table 5000\n", i>>8&0xff, i&0xff)
				}
				cmd := exec.Command("ip", "-n", l.Router, "-batch", "-")
				cmd.Stdin = strings.NewReader(sb.String())
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("adding %d foreign routes: %v: %s", n, err, out)
				}
			}
			cfg := writeBenchConfig(b, 2, "nftables")

			// The no-op pass, driven directly (no event loop).
			ns, err := l.NsHandle(l.Router)
			if err != nil {
				b.Fatal(err)
			}
			d, err := Open(Options{ConfigPath: cfg, NetNS: ns, ControlSocket: "-", StateDir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			if r := d.sync(time.Now()); r.Err != nil {
				b.Fatal(r.Err)
			}
			var warm []time.Duration
			for range 50 {
				r := d.sync(time.Now())
				if r.Err != nil || len(r.Changes) != 0 {
					b.Fatalf("warm pass: %v, %d changes", r.Err, len(r.Changes))
				}
				warm = append(warm, r.End.Sub(r.Start))
			}
			d.kernel.Close()
			d.fw.Close()
			ns.Close()

			syncs := make(chan SyncResult, 4096)
			stop := benchDaemon(b, l, cfg, func(s SyncResult) { syncs <- s })
			defer stop()
			waitFor(b, syncs, func(s SyncResult) bool { return hasActive(s, "ppp1") })
			var event []time.Duration
			b.ResetTimer()
			for range b.N {
				for range 50 {
					res := dropAndDial(b, l, syncs, "ppp1")
					s := waitFor(b, syncs, func(s SyncResult) bool { return addsRuleFrom(s, res.New.String()) && s.FirewallChanged })
					event = append(event, s.End.Sub(s.Trigger))
				}
			}
			b.StopTimer()
			report(b, "warm", warm)
			report(b, "event", event)
		})
	}
}
