package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkTrafficTriggerCost: what watching an uplink costs, with
// traffic_trigger on ppp0 (default check: interval 1s, 2 targets): the
// daemon process's CPU (this test process: the daemon and an idle test
// harness; the flow runs in other processes) and the probe packets per
// second ppp0 sends (ICMP echo requests to its targets, counted at its
// ISP), over UPLINKD_COST_SECONDS (default 10) each, at idle and while a
// LAN host sends a two-way flow of at least 10 kpps through ppp0 (ping -i
// 0.0001 to an inet host that is not a probe target, the kernel answering;
// below 2 ms ping sends as fast as the replies come back, about 30 kpps
// here: flow-pkts/s is what reached ppp0's ISP). The trigger's cost does
// not grow with the rate: the kernel counts, the daemon reads the counters
// every traffic_window/2 whatever they say.
//
//	go test -run '^$' -bench TrafficTriggerCost -benchtime 1x ./internal/daemon
func BenchmarkTrafficTriggerCost(b *testing.B) {
	secs := 10
	if v := envInt(b, "UPLINKD_COST_SECONDS"); v > 0 {
		secs = v
	}
	l := benchLab(b, 2)
	cfg := strings.Replace(triggerConfig("nftables"), "[lan]", "[daemon]\nlog_level = \"warn\"\n[lan]", 1)
	syncs := make(chan SyncResult, 4096)
	stop := benchDaemon(b, l, writeConfigB(b, cfg), func(s SyncResult) {
		select {
		case syncs <- s:
		default:
		}
	})
	defer stop()
	waitForWithin(b, syncs, 10*time.Second, func(s SyncResult) bool { return hasActive(s, "ppp0") })
	isp := l.ISPs[0]
	// Count, at ppp0's ISP, the probes (echo requests to the targets) and
	// the flow's packets (echo requests to 198.51.100.1).
	const counting = `table inet uplinkd_cost {
	chain c {
		type filter hook prerouting priority -300; policy accept;
		iifname "cust0" ip daddr { 192.0.2.1, 192.0.2.2 } icmp type echo-request counter
		iifname "cust0" ip daddr 198.51.100.1 icmp type echo-request counter
	}
}
`
	rules := filepath.Join(b.TempDir(), "cost.nft")
	if err := os.WriteFile(rules, []byte(counting), 0o600); err != nil {
		b.Fatal(err)
	}
	if _, err := l.Exec(isp, "nft", "-f", rules); err != nil {
		b.Fatal(err)
	}
	counters := func() (probes, flow uint64) {
		out, err := l.Exec(isp, "nft", "list", "table", "inet", "uplinkd_cost")
		if err != nil {
			b.Fatal(err)
		}
		m := regexp.MustCompile(`packets (\d+)`).FindAllStringSubmatch(out, -1)
		if len(m) != 2 {
			b.Fatalf("counters: %s", out)
		}
		p, _ := strconv.ParseUint(m[0][1], 10, 64)
		f, _ := strconv.ParseUint(m[1][1], 10, 64)
		return p, f
	}
	measure := func(name string) {
		d := time.Duration(secs) * time.Second
		p0, f0 := counters()
		c0, t0 := cpuTime(b), time.Now()
		time.Sleep(d) // a benchmark's measuring period
		c1, t1 := cpuTime(b), time.Now()
		p1, f1 := counters()
		el := t1.Sub(t0).Seconds()
		b.ReportMetric(100*(c1-c0).Seconds()/el, name+"-cpu-%")
		b.ReportMetric(float64(p1-p0)/el, name+"-probes/s")
		b.ReportMetric(float64(f1-f0)/el, name+"-flow-pkts/s")
	}
	b.ResetTimer()
	for range b.N {
		measure("idle")
		ping, err := l.Start(l.LAN, "ping", "-q", "-i", "0.0001", "-s", "56", "198.51.100.1")
		if err != nil {
			b.Fatal(err)
		}
		measure("flow")
		_ = ping.Process.Kill()
		_ = l.Wait(ping)
	}
	b.StopTimer()
}

// cpuTime is the user + system CPU time of this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(b *testing.B, name string) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}
