package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uplinkd/uplinkd/internal/lab"
)

// BenchmarkBackendDeathToRemoval measures, in the lab with the in-process
// daemon, the time from a [[service]] backend's death (its listener closed:
// connects are refused from then on) to the end of the reconcile pass that
// took it out of the firewall's set:
//   - removal: death → end of that pass (the kernel no longer DNATs to it);
//   - detect: death → the checker's report reaching the loop (the pass's
//     trigger), which the check timings bound: down checks in a row, so
//     between (down-1)·interval and down·interval;
//   - apply: the loop's part, trigger → end of the pass.
//
// Run: go test -run '^$' -bench BackendDeathToRemoval -benchtime 1x ./internal/daemon
func BenchmarkBackendDeathToRemoval(b *testing.B) {
	for _, tc := range []struct {
		name, check string
		interval    time.Duration
		deaths      int
	}{
		{"default", ``, 2 * time.Second, 10}, // interval 2s, timeout 1s, down 2, up 2
		{"fast", `check = { interval = "100ms", timeout = "50ms", down = 2, up = 2 }`, 100 * time.Millisecond, 50},
	} {
		for _, backend := range []string{"nftables", "iptables-legacy"} {
			b.Run(tc.name+"/firewall="+backend, func(b *testing.B) { benchBackendDeath(b, backend, tc.check, tc.interval, tc.deaths) })
		}
	}
}

func benchBackendDeath(b *testing.B, backend, check string, interval time.Duration, deaths int) {
	l := lab.NewT(b, lab.Spec{Uplinks: []lab.UplinkSpec{{Name: "ppp0", Kind: "ppp"}}})
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")}
	if err := l.AddLANAddrs(addrs...); err != nil {
		b.Fatal(err)
	}
	srv := make([]*backendSrv, len(addrs))
	for i, a := range addrs {
		srv[i] = &backendSrv{l: l, addr: a.String() + ":8080", name: fmt.Sprintf("b%d", i+3)}
		if err := srv[i].listen(); err != nil {
			b.Fatal(err)
		}
		defer srv[i].stop()
	}
	name, variant, _ := strings.Cut(backend, "-")
	if variant == "" {
		variant = "auto"
	}
	cfg := fmt.Sprintf(`[daemon]
log_level = "warn"
[lan]
interface = "lan0"
networks = ["10.0.0.0/24"]
[[uplink]]
name = "ppp0"
kind = "ppp"
table = 1000
rule_priority = 1000
[firewall]
backend = %q
iptables_variant = %q
[[service]]
name = "web"
uplinks = ["ppp0"]
port = 80
balance = "weighted"
backends = ["10.0.0.3:8080", "10.0.0.4:8080"]
%s
`, name, variant, check)
	ns, err := l.NsHandle(l.Router)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	syncs := make(chan SyncResult, 4096)
	d, err := Open(Options{ConfigPath: writeBenchFile(b, cfg), NetNS: ns, ControlSocket: "-", StateDir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnSync: func(s SyncResult) { syncs <- s }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	victim := netip.MustParseAddrPort("10.0.0.4:8080")
	inSet := func() bool { return slices.Contains(d.healthyBackends()["web"], victim) }
	waitFor(b, syncs, func(s SyncResult) bool { return s.Err == nil })

	var removal, detect, apply []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range deaths {
			// A backend dies at any moment of its check cycle, not right
			// after the check that brought it back.
			b.StopTimer()
			time.Sleep(rand.N(interval))
			b.StartTimer()
			death := time.Now()
			srv[1].stop()
			s := waitForWithin(b, syncs, 30*time.Second, func(s SyncResult) bool { return s.FirewallChanged && !inSet() })
			removal = append(removal, s.End.Sub(death))
			detect = append(detect, s.Trigger.Sub(death))
			apply = append(apply, s.End.Sub(s.Trigger))
			if i == 0 {
				b.StopTimer()
				if out, _ := l.Exec(l.Router, "nft", "list", "ruleset"); backend == "nftables" && strings.Contains(out, victim.String()) {
					b.Fatalf("the pass that removed the backend left it in the table:\n%s", out)
				}
				b.StartTimer()
			}
			if err := srv[1].listen(); err != nil {
				b.Fatal(err)
			}
			waitForWithin(b, syncs, 30*time.Second, func(s SyncResult) bool { return s.FirewallChanged && inSet() })
		}
	}
	b.StopTimer()
	report(b, "removal", removal)
	report(b, "detect", detect)
	report(b, "apply", apply)
}

func writeBenchFile(b *testing.B, text string) string {
	p := b.TempDir() + "/bench.toml"
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}
