package daemon

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// haCycles is how many fail-over cycles one benchmark run measures: b.N, but
// at least 5, so the default -benchtime 1x still gives a spread.
func haCycles(b *testing.B) int { return max(b.N, 5) }

// BenchmarkHAFailover: real keepalived (advert_int 1) on two lab routers.
// Both of the master's uplinks lose carrier; measured is the time from the
// second carrier loss to the LAN client's first new connection that leaves
// through the backup's uplinks (seen by an inet server). preempt_delay is 0
// so the fail-back, which is not measured, is quick.
func BenchmarkHAFailover(b *testing.B) {
	hp := newHAPair(b, haOpts{kaWeight: 1, preemptDelay: 0})
	hp.settle()
	var vals []float64
	for range haCycles(b) {
		lost := hp.setCarrier(0, false)
		moved := hp.waitThrough(1, 10*time.Second)
		vals = append(vals, float64(moved.Sub(lost).Milliseconds()))
		hp.setCarrier(0, true)
		hp.waitThrough(0, 15*time.Second)
	}
	quantiles(b, "failover", "ms", vals)
}

// BenchmarkHARoleToDial: one router with an exclusive uplink (dsl0) on a lab
// account. Measured: SetRole(master) (what the control socket does with
// `uplinkd event --role master`) to dsl0 up with an address (the reconnect
// command ran and the account dialled), and SetRole(backup) to dsl0 gone
// (the stop command hung up).
func BenchmarkHARoleToDial(b *testing.B) {
	l := lab.NewT(b, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: "ppp"}, {Name: "dsl0", Kind: "ppp"}}})
	if _, err := l.DropLink("dsl0"); err != nil {
		b.Fatal(err)
	}
	var r *running
	acct := newAccount(b, []*lab.Lab{l}, func(int) string {
		role, _, _ := r.d.HAState()
		return role
	})
	track := b.TempDir() + "/ha-track"
	cfg := fmt.Sprintf(`
[lan]
interface = "lan0"
networks  = ["10.0.0.0/24"]
[ha]
track_file = %q
[[uplink]]
name = "ppp0"
table = 200
rule_priority = 200
[[uplink]]
name = "dsl0"
kind = "ppp"
table = 202
rule_priority = 400
  [uplink.ha]
  mode = "exclusive"
  [uplink.reconnect]
  command = [%q, "dial", "A"]
  stop_command = [%q, "hangup", "A"]
  backoff = "500ms"
  max_backoff = "1s"
`, track, acct.script, acct.script)
	path := b.TempDir() + "/uplinkd.toml"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	r = start(b, l, path)
	wait := func(up bool) time.Time {
		deadline := time.Now().Add(10 * time.Second)
		for l.UplinkAddr("dsl0").IsValid() != up {
			if time.Now().After(deadline) {
				b.Fatalf("dsl0 up=%v not reached", up)
			}
			time.Sleep(time.Millisecond)
		}
		return time.Now()
	}
	var dial, hangup []float64
	ctx := context.Background()
	for range haCycles(b) {
		at := time.Now()
		if err := r.d.SetRole(ctx, "master"); err != nil {
			b.Fatal(err)
		}
		dial = append(dial, float64(wait(true).Sub(at).Microseconds())/1000)
		at = time.Now()
		if err := r.d.SetRole(ctx, "backup"); err != nil {
			b.Fatal(err)
		}
		hangup = append(hangup, float64(wait(false).Sub(at).Microseconds())/1000)
	}
	quantiles(b, "role-to-dialled", "ms", dial)
	quantiles(b, "role-to-hungup", "ms", hangup)
}
