package daemon

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkTrafficDetection: the time from a silent blackhole at ppp0's ISP
// to ppp0 leaving the main default route, with a LAN host running a two-way
// 1 kHz UDP flow through ppp0 (traffic: the traffic trigger confirms with a
// burst) and with no traffic at all (idle: the probe schedule, interval 1s,
// down 3, timeout 800ms). Both use the default check plus traffic_trigger
// = true and hold_down = "0s"; each trial starts a new flow (a new
// connection: the old one stays on ppp1, where it failed over).
//
// A traffic trial starts once the line has answered every probe for
// burstCleanRounds rounds since it recovered (the burst then waits 4× their
// slowest RTT, at least 200ms, not the whole timeout: burstTimeoutFor), as
// a line that was healthy before it broke has.
//
// UPLINKD_DETECT_TRIALS trials per mode (default 10); one iteration is
// enough. UPLINKD_DETECT_TIMEOUT sets the check's timeout (default 800ms),
// which a burst after a lost probe waits for:
//
//	UPLINKD_DETECT_TRIALS=20 go test -run '^$' -bench TrafficDetection -benchtime 1x ./internal/daemon
func BenchmarkTrafficDetection(b *testing.B) {
	trials := 10
	if v := os.Getenv("UPLINKD_DETECT_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("UPLINKD_DETECT_TRIALS=%q: want a positive count", v)
		}
		trials = n
	}
	l := benchLab(b, 2)
	echoServer(b, l, "192.0.2.1:9000")
	cfg := strings.Replace(triggerConfig("nftables"), "[lan]", "[daemon]\nlog_level = \"warn\"\n[lan]", 1)
	if v := os.Getenv("UPLINKD_DETECT_TIMEOUT"); v != "" {
		if _, err := time.ParseDuration(v); err != nil {
			b.Fatalf("UPLINKD_DETECT_TIMEOUT: %v", err)
		}
		cfg = strings.ReplaceAll(cfg, "  hold_down = ", "  timeout = \""+v+"\"\n  hold_down = ")
	}
	syncs := make(chan SyncResult, 4096)
	stop := benchDaemon(b, l, writeConfigB(b, cfg), func(s SyncResult) { syncs <- s })
	defer stop()
	waitForWithin(b, syncs, 10*time.Second, func(s SyncResult) bool { return hasActive(s, "ppp0") })

	var traffic, idle []time.Duration
	recovered := time.Now()
	trial := func(withFlow bool) time.Duration {
		var f *echoFlow
		if withFlow {
			// The recovered line's last rounds must be clean: about
			// burstCleanRounds intervals since it came back (a
			// benchmark's wait: the figure is of a healthy line).
			time.Sleep(time.Until(recovered.Add((burstCleanRounds + 1) * time.Second)))
			f = startEchoFlow(b, l, "192.0.2.1:9000")
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if n, _ := f.state(); n > 100 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("the flow gets no replies through ppp0")
				}
			}
		}
		at := time.Now()
		if err := l.Blackhole("ppp0", true); err != nil {
			b.Fatal(err)
		}
		s := waitForWithin(b, syncs, 20*time.Second, func(s SyncResult) bool { return !hasActive(s, "ppp0") })
		if f != nil {
			f.close()
		}
		if err := l.Blackhole("ppp0", false); err != nil {
			b.Fatal(err)
		}
		waitForWithin(b, syncs, 20*time.Second, func(s SyncResult) bool { return hasActive(s, "ppp0") })
		recovered = time.Now()
		return s.End.Sub(at)
	}
	b.ResetTimer()
	for range b.N {
		for range trials {
			traffic = append(traffic, trial(true))
			idle = append(idle, trial(false))
		}
	}
	b.StopTimer()
	report(b, "traffic-detect", traffic)
	report(b, "idle-detect", idle)
}
